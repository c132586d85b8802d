"""The real process: ``python -m worker_runtime_http serve`` on 127.0.0.1, driven over TCP, stopped by signals."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from http_helpers import ServerProcess, server_process, started


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test only drives a child process; one backend is enough


SLOW_PROFILE = '[profiles.slow]\nengine = "command"\nargv = ["sleep", "60"]\n'


async def wait_run_end(client: httpx.AsyncClient, worker_id: str, run_id: str) -> dict[str, Any]:
    """Long-poll the Worker's events until its run has a terminal event; returns that event."""
    after = 0
    with anyio.fail_after(20):
        while True:
            page = (await client.get("/v1/events", params={"worker_id": worker_id, "after": after, "wait": 5})).json()
            for event in page["events"]:
                if event["kind"].startswith("run_") and event["run_id"] == run_id:
                    return event  # type: ignore[no-any-return]
            after = page["next_after"]


async def create_and_send(client: httpx.AsyncClient, worker_id: str, content: str, **fields: Any) -> str:
    assert (await client.post("/v1/workers", json={"worker_id": worker_id, **fields})).status_code == 201
    response = await client.post(f"/v1/workers/{worker_id}/input", json={"content": content})
    assert response.status_code == 202, response.text
    return str(response.json()["ack"]["run_id"])


def exit_line(server: ServerProcess) -> str:
    """The one line a process that could not start printed."""
    lines = [line for line in server.lines if line.strip()]
    assert len(lines) == 1, server.lines
    assert lines[0].startswith("worker-runtime-http: error: ")
    return lines[0]


async def test_serve_over_tcp_with_a_token_and_json_logs_then_sigterm_exits_0(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tcp-secret-token\n")
    args = ["--port", "0", "--store", "memory", "--token-file", str(token_file), "--log-format", "json"]
    async with server_process(args) as server:
        base_url = await started(server)
        async with httpx.AsyncClient(base_url=base_url) as anonymous:
            assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
            assert (await anonymous.get("/v1/runtime")).status_code == 401
        headers = {"authorization": "Bearer tcp-secret-token", "x-request-id": "tcp-1"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
            run_id = await create_and_send(client, "w1", "hello")
            assert (await wait_run_end(client, "w1", run_id))["kind"] == "run_completed"
            transcript = (await client.get("/v1/workers/w1/transcript")).json()["transcript"]
            assert [e["content"] for e in transcript["items"]] == ["hello", "hello"]
            missing = await client.get("/v1/workers/ghost")
            assert missing.headers["x-request-id"] == "tcp-1"
            assert "server" not in missing.headers
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0
    records = [json.loads(line) for line in server.lines if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r.get("path") == "/v1/workers/w1/input" and r.get("status") == 202 for r in records)
    assert any("store closed" in r["message"] for r in records)
    assert not any("tcp-secret-token" in line for line in server.lines)


async def test_the_fs_store_survives_a_restart_and_refuses_another_runtime_id(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "runtime.toml"
    config.write_text(SLOW_PROFILE)
    args = ["--port", "0", "--store-path", str(store), "--config", str(config), "--shutdown-grace-s", "0"]
    async with server_process(args) as server:
        async with httpx.AsyncClient(base_url=await started(server)) as client:
            runtime_id = (await client.get("/v1/runtime")).json()["runtime"]["runtime_id"]
            done = await create_and_send(client, "w1", "kept")
            await wait_run_end(client, "w1", done)
            slow = await create_and_send(client, "w2", "never ends", profile={"kind": "named", "name": "slow"})
            async with server_process(["--port", "0", "--store-path", str(store)]) as rival:
                assert await rival.wait() == 1
            assert "locked" in exit_line(rival)
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0

    async with server_process(["--port", "0", "--store-path", str(store), "--config", str(config)]) as again:
        async with httpx.AsyncClient(base_url=await started(again)) as client:
            assert (await client.get("/v1/runtime")).json()["runtime"]["runtime_id"] == runtime_id
            items = (await client.get("/v1/workers/w1/transcript")).json()["transcript"]["items"]
            assert [e["content"] for e in items] == ["kept", "kept"]
            run = (await client.get(f"/v1/workers/w2/runs/{slow}")).json()["run"]
            assert run["status"] == "interrupted"
        again.signal(signal.SIGINT)
        assert await again.wait() == 0

    async with server_process(["--port", "0", "--store-path", str(store), "--runtime-id", "rt-other"]) as other:
        assert await other.wait() == 1
    line = exit_line(other)
    assert runtime_id in line and "rt-other" in line


async def test_sigterm_refuses_new_input_while_active_runs_finish(tmp_path: Path) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("shutdown_grace_s = 60\n" + SLOW_PROFILE)
    args = ["--port", "0", "--store-path", str(tmp_path / "store"), "--config", str(config)]
    async with server_process(args) as server:
        async with httpx.AsyncClient(base_url=await started(server)) as client:
            run_id = await create_and_send(client, "w1", "long", profile={"kind": "named", "name": "slow"})
            assert (await client.post("/v1/workers", json={"worker_id": "w2"})).status_code == 201
            server.signal(signal.SIGTERM)
            await server.wait_for_line(r"stopping: new input answers 503")
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"status": "stopping"})
            refused = await client.post("/v1/workers/w2/input", json={"content": "late"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "runtime_unavailable"
            assert refused.json()["error"]["retryable"] is True
            assert (await client.get("/v1/workers/w1")).json()["worker"]["status"] == "busy"
            cancelled = await client.post("/v1/workers/w1/cancel", json={"run_id": run_id})
            assert cancelled.json()["ack"]["cancelled_run_id"] == run_id
        assert await server.wait() == 0


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "runtime.toml"
    config.write_text("shutdown_grace_s = 60\n" + SLOW_PROFILE)
    async with server_process(["--port", "0", "--store-path", str(store), "--config", str(config)]) as server:
        async with httpx.AsyncClient(base_url=await started(server)) as client:
            run_id = await create_and_send(client, "w1", "long", profile={"kind": "named", "name": "slow"})
        server.signal(signal.SIGTERM)
        await server.wait_for_line(r"stopping: new input answers 503")
        server.signal(signal.SIGTERM)
        assert await server.wait() == 128 + signal.SIGTERM
    async with server_process(["--port", "0", "--store-path", str(store), "--config", str(config)]) as again:
        async with httpx.AsyncClient(base_url=await started(again)) as client:
            assert (await client.get(f"/v1/workers/w1/runs/{run_id}")).json()["run"]["status"] == "interrupted"
        again.signal(signal.SIGTERM)
        assert await again.wait() == 0


async def test_the_defaults_serve_an_fs_store_under_dot_worker_runtime(tmp_path: Path) -> None:
    async with server_process(["--port", "0"], cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=await started(server)) as client:
            store = (await client.get("/v1/runtime")).json()["runtime"]["store"]
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0
    assert store == {"kind": "fs", "path": store["path"], "fsync": "always"}
    assert Path(store["path"]).resolve() == (tmp_path / ".worker-runtime").resolve()
