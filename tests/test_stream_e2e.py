"""The event stream of a real process over TCP: a dropped connection and a restart of the process while streaming
lose and repeat nothing; abrupt disconnects in the middle of frames leave no stream behind."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute
from e2e_helpers import runtime_process

TOKEN = "stream-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
Frame = dict[str, Any]

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def frames_of(response: httpx.Response) -> AsyncIterator[Frame]:
    """Server-Sent Events frames (comments left out) as they arrive."""
    frame: Frame = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = json.loads(value) if name == "data" else value


async def read_until(frames: AsyncIterator[Frame], seen: list[Frame], done: Any) -> None:
    with anyio.fail_after(30):
        async for frame in frames:
            seen.append(frame)
            if done(frame):
                return
    raise AssertionError(f"the stream ended after {[f.get('event') for f in seen]}")


def completed(count: int, seen: list[Frame]) -> Any:
    """A `done` for `read_until`: the `count`-th run_completed in `seen`."""
    return lambda frame: sum(f["event"] == "run_completed" for f in seen) == count


async def test_a_client_resumes_across_a_dropped_connection_and_a_restart(tmp_path: Path, anyio_backend: str) -> None:
    args = ["--store", "fs", "--store-path", str(tmp_path / "store"), "--token", TOKEN]
    seen: list[Frame] = []
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
        async with runtime_process(args, tmp_path) as url:
            assert (await client.post(f"{url}/v1/workers", json={"worker_id": "w"})).status_code == 201
            async with client.stream("GET", f"{url}/v1/events/stream", params={"after": 0}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                await client.post(f"{url}/v1/workers/w/input", json={"content": "first ✓"})
                await read_until(frames_of(response), seen, completed(1, seen))
            # dropped: the next connection names the last id it received
            stream = client.stream("GET", f"{url}/v1/events/stream", headers={"last-event-id": seen[-1]["id"]})
            response = await stream.__aenter__()
            frames = frames_of(response)
            for n in range(2):
                await client.post(f"{url}/v1/workers/w/input", json={"content": f"input {n}"})
            await read_until(frames, seen, completed(3, seen))
            # leaving the block stops the process (SIGTERM): the stream gets runtime_stopping, then its end
        stop_frames = [frame async for frame in frames]
        await stream.__aexit__(None, None, None)
        assert [f["event"] for f in stop_frames] == ["runtime_stopping"]
        seen += stop_frames
        async with runtime_process(args, tmp_path) as url:
            headers = {"last-event-id": seen[-1]["id"]}
            async with client.stream("GET", f"{url}/v1/events/stream", headers=headers) as response:
                await client.post(f"{url}/v1/workers/w/input", json={"content": "after the restart"})
                await read_until(frames_of(response), seen, completed(4, seen))
            events = (await client.get(f"{url}/v1/events", params={"limit": 1000})).json()["events"]
    ids = [int(f["id"]) for f in seen]
    assert ids == list(range(1, len(ids) + 1))  # nothing lost, nothing repeated
    assert ids == [e["id"] for e in events][: len(ids)]
    kinds = [f["event"] for f in seen]
    assert kinds.count("runtime_started") == 2 and kinds.count("runtime_stopping") == 1
    contents = [f["data"]["entry"]["content"] for f in seen if f["event"] == "input_accepted"]
    assert contents == ["first ✓", "input 0", "input 1", "after the restart"]


async def test_abrupt_disconnects_mid_frame_leave_no_stream_behind(tmp_path: Path, anyio_backend: str) -> None:
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nmax_streams = 4\n")
    args = ["--store", "memory", "--token", TOKEN, "--config", str(config)]
    async with runtime_process(args, tmp_path) as url:
        host, port = url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            await client.post("/v1/workers", json={"worker_id": "w"})
            for n in range(3):  # entries of some size: a replay spans several TCP segments
                await client.post("/v1/workers/w/input", json={"content": f"{n}" * 20_000})
            request = (
                f"GET /v1/events/stream?after=0 HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
            for n in range(1000):  # async sockets: the loop keeps draining the server's log meanwhile
                with anyio.fail_after(10):
                    sock = await anyio.connect_tcp(host, int(port))
                    async with sock:
                        await sock.send(request)
                        if n % 2:
                            await sock.receive(100 + n)  # the headers and maybe part of a frame
                        raw = sock.extra(SocketAttribute.raw_socket)  # close with a reset, whatever is in flight
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with anyio.fail_after(30):
                while True:  # every slot comes back once the server has seen each disconnect
                    async with AsyncExitStack() as streams:
                        statuses = [
                            (await streams.enter_async_context(client.stream("GET", "/v1/events/stream"))).status_code
                            for _ in range(4)
                        ]
                        if statuses == [200] * 4:
                            fifth = await client.get("/v1/events/stream")
                            break
    assert fifth.status_code == 503 and fifth.json()["error"]["code"] == "runtime_unavailable"
