"""The client's event stream over real TCP: a small SSE server on 127.0.0.1 that speaks the stream's frame format
stops (sending ``runtime_stopping``), is gone for a while, and comes back on the same port; the client reads on
from its cursor with no event lost or repeated.

uvicorn serves on asyncio: the restart test runs on asyncio only (the injected sleep of the stream is where it stops
and restarts the server, so no step waits on time); the test of leaving a stream early serves from a thread of its
own, so the client runs under trio too.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import uvicorn
from client_helpers import runtime_body
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from stream_helpers import event, frame

from worker_runtime_client import EventStream, RetryPolicy, RuntimeClient, RuntimeStoppingEvent


class _Server(uvicorn.Server):
    def __init__(self, app: Starlette) -> None:
        super().__init__(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.ready = anyio.Event()
        self.done = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def run_on(self, sock: socket.socket) -> None:
        try:
            await self.serve(sockets=[sock])
        finally:
            self.done.set()


def _app(log: list[dict[str, Any]], seen: list[str | None], *, stopping_after: int | None) -> Starlette:
    """A stream of `log` from the request's cursor. With `stopping_after`, the first connection sends that many
    events and a `runtime_stopping` and ends, and every later one is 503 (a Runtime shutting down)."""

    async def stream(request: Request) -> Response:
        header = request.headers.get("last-event-id")
        seen.append(header)
        if stopping_after is not None and len(seen) > 1:
            error = {"code": "runtime_unavailable", "message": "stopping", "details": {}, "retryable": True}
            return JSONResponse({"error": error}, status_code=503)
        cursor = int(header) if header is not None else int(request.query_params.get("after", "0"))

        async def body() -> Any:
            if stopping_after is not None:
                for e in log[cursor:stopping_after]:
                    yield frame(e)
                yield frame(event(stopping_after + 1, "runtime_stopping", worker_ref=None, data={}))
                return
            for e in log[cursor:]:
                yield frame(e)
            await anyio.sleep_forever()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def runtime(request: Request) -> Response:
        return JSONResponse(runtime_body())

    return Starlette(routes=[Route("/v1/events/stream", stream), Route("/v1/runtime", runtime)])


def _socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stream_resumes_from_its_cursor_across_a_server_restart_on_real_tcp() -> None:
    before = [event(i) for i in range(1, 6)]
    after = [*before, event(6, "runtime_stopping", worker_ref=None, data={})]
    after += [event(i) for i in range(7, 10)]
    seen_first: list[str | None] = []
    seen_second: list[str | None] = []
    first = _Server(_app(before, seen_first, stopping_after=5))
    second = _Server(_app(after, seen_second, stopping_after=None))
    sock = _socket()
    port = sock.getsockname()[1]
    sleeps: list[float] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run_on, sock)
        with anyio.fail_after(30):
            await first.ready.wait()

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:  # the stopping server refused once: it goes away now
                first.should_exit = True
                await first.done.wait()
            elif len(sleeps) == 3:  # the port refused a connection: the server comes back on it
                tg.start_soon(second.run_on, _socket(port))
                await second.ready.wait()

        retries = RetryPolicy(attempts=1, backoff_s=0.05, max_backoff_s=0.2)
        async with RuntimeClient(f"http://127.0.0.1:{port}", retries=retries) as rt:
            ids = []
            with anyio.fail_after(30):  # a bound against a hang, not a wait
                async with EventStream(rt, 0, sleep=sleep) as stream:
                    async for item in stream:
                        ids.append((item.id, isinstance(item, RuntimeStoppingEvent)))
                        if len(ids) == 9:
                            break
        second.should_exit = True

    assert ids == [(i, i == 6) for i in range(1, 10)]  # every event once, in order, across the restart
    assert seen_first == [None, "6"]  # the first stream from `after`, then a reconnect refused with 503
    assert seen_second == ["6"]  # the restarted server was asked from the cursor
    assert len(sleeps) == 3 and all(0 <= s <= 0.2 for s in sleeps)
    assert stream.reconnects == 1 and stream.cursor == 9


@pytest.fixture
def threaded_server() -> Iterator[str]:
    """A stream of five events that then stays open, served by uvicorn on its own thread and event loop."""
    log = [event(i) for i in range(1, 6)]
    server = uvicorn.Server(uvicorn.Config(_app(log, [], stopping_after=None), log_level="warning", lifespan="off"))
    sock = _socket()
    started = threading.Event()
    original = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original(sockets=sockets)
        started.set()

    server.startup = startup  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)


async def test_leaving_a_stream_early_ends_every_reader_of_its_connection(threaded_server: str) -> None:
    # Frames are still buffered when the caller leaves. httpx reads a body through a chain of async generators; if
    # any were left suspended, trio would warn when collecting them, and the suite turns warnings into failures.
    async with RuntimeClient(threaded_server, retries=RetryPolicy(attempts=2)) as rt:
        for _ in range(3):
            with anyio.fail_after(30):  # a bound against a hang, not a wait
                async with rt.stream_events(after=0) as stream:
                    async for item in stream:
                        if item.id == 2:
                            break
            assert stream.cursor == 2
            gc.collect()
        async with rt.stream_events(after=4) as stream:  # and the connection pool still serves a stream
            assert (await stream.__anext__()).id == 5
    gc.collect()
