"""The client against the real HTTP app: in-process through ASGI, and real processes over TCP."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from e2e_helpers import SLEEPER, profiles_toml, runtime_process

from worker_runtime_client import (
    IdempotencyConflictError,
    RetryPolicy,
    RuntimeClient,
    RuntimeMismatchError,
    RuntimePool,
    UnauthorizedError,
    WorkerBusyError,
    WorkerNotFoundError,
    WorkerRef,
    WorkerStoppedError,
)
from worker_runtime_core import Limits, ProfileConfig, RunInfo, Runtime
from worker_runtime_http import create_app

TOKEN = "e2e-token"


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the app and remembers (method, path) of each."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: set[tuple[str, str]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.add((request.method, request.url.path))
        return await self.inner.handle_async_request(request)


class PollSpy(httpx.AsyncBaseTransport):
    """Passes requests to the app, remembers the `wait` of each events long-poll, and says when one was sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.waits: list[float] = []
        self.polled = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events" and "wait" in request.url.params:
            self.waits.append(float(request.url.params["wait"]))
            self.polled.set()
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def served() -> AsyncIterator[tuple[RuntimeClient, Recorder, Runtime]]:
    profiles = {"slow": ProfileConfig("command", argv=SLEEPER, kill_grace_s=1)}
    async with Runtime(runtime_id="rt-e2e", profiles=profiles) as runtime:
        recorder = Recorder(httpx.ASGITransport(app=create_app(runtime, token=TOKEN, allowed_hosts=["rt.test"])))
        async with RuntimeClient("http://rt.test", token=TOKEN, transport=recorder, runtime_id="rt-e2e") as client:
            yield client, recorder, runtime


async def test_a_backend_drives_a_worker_end_to_end(served: tuple[RuntimeClient, Recorder, Runtime]) -> None:
    client, _, _ = served
    worker = await client.create_worker(display_name="Helper")
    wid = worker.worker_ref.worker_id
    assert worker.worker_ref.runtime_id == "rt-e2e" and worker.display_ref == "Helper@rt-e2e"
    ack = await client.send_input(wid, "hello", input_id="in-1")
    run = await client.wait_for_run(wid, ack.run_id, timeout=30)
    assert run.status == "completed"
    assert [e.content async for e in client.iter_transcript(wid)] == ["hello", "hello"]
    again = await client.send_input(wid, "hello", input_id="in-1")
    assert again.duplicate and again.run_id == ack.run_id
    with pytest.raises(IdempotencyConflictError):
        await client.send_input(wid, "other", input_id="in-1")
    events = [e.kind for e in await _take(client.watch_events(worker_id=wid, wait=1), 4)]
    assert events == ["worker_created", "input_accepted", "transcript_appended", "run_completed"]
    assert [w.worker_ref.worker_id async for w in client.iter_workers()] == [wid]
    stop = await client.stop_worker(wid, reason="done")
    assert stop.status == "stopped" and stop.event_id is not None
    with pytest.raises(WorkerStoppedError) as info:
        await client.send_input(wid, "more")
    assert info.value.status == 409
    assert (await client.delete_worker(wid)).status == "deleted"
    with pytest.raises(WorkerNotFoundError):
        await client.get_worker(wid)
    assert (await client.runtime()).workers.total == 0
    assert isinstance(await client.diagnostics(), list)


async def test_cancel_of_a_long_command_run_and_busy(served: tuple[RuntimeClient, Recorder, Runtime]) -> None:
    client, _, _ = served
    wid = (await client.create_worker(profile={"kind": "named", "name": "slow"})).worker_ref.worker_id
    ack = await client.send_input(wid, "work")
    with pytest.raises(WorkerBusyError) as busy:
        await client.send_input(wid, "more")
    assert busy.value.run_id == ack.run_id and busy.value.retry_after == 1.0
    cancel = await client.cancel_worker(wid, run_id=ack.run_id, reason="enough")
    assert cancel.cancelled_run_id == ack.run_id and cancel.status == "idle"
    assert (await client.wait_for_run(wid, ack.run_id, timeout=30)).status == "cancelled"


async def test_wait_for_run_and_watch_events_keep_to_a_short_max_wait() -> None:
    profiles = {"slow": ProfileConfig("command", argv=SLEEPER, kill_grace_s=1)}
    async with Runtime(runtime_id="rt-short", profiles=profiles, limits=Limits(max_wait_s=2)) as runtime:
        spy = PollSpy(
            httpx.ASGITransport(app=create_app(runtime, allow_unauthenticated=True, allowed_hosts=["rt.test"]))
        )
        async with RuntimeClient("http://rt.test", transport=spy) as client:
            wid = (await client.create_worker(profile={"kind": "named", "name": "slow"})).worker_ref.worker_id
            ack = await client.send_input(wid, "work")
            ended: list[RunInfo] = []

            async def wait() -> None:
                ended.append(await client.wait_for_run(wid, ack.run_id, timeout=30))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                with anyio.fail_after(30):
                    await spy.polled.wait()  # the run is still going: wait_for_run is in its long-poll
                await client.cancel_worker(wid, run_id=ack.run_id)
            assert [run.status for run in ended] == ["cancelled"]
            events = [e.kind for e in await _take(client.watch_events(worker_id=wid), 3)]
    assert events == ["worker_created", "input_accepted", "run_cancelled"]
    assert len(spy.waits) >= 2 and set(spy.waits) == {2.0}


async def test_every_path_the_client_calls_is_in_the_openapi_document(
    served: tuple[RuntimeClient, Recorder, Runtime],
) -> None:
    client, recorder, _ = served
    wid = (await client.create_worker()).worker_ref.worker_id
    ack = await client.send_input(wid, "hi")
    await client.wait_for_run(wid, ack.run_id, timeout=30)
    await client.get_run(wid, ack.run_id)
    await client.transcript(wid)
    await client.list_workers()
    await client.events()
    await client.diagnostics()
    await client.cancel_worker(wid)
    await client.stop_worker(wid)
    await client.delete_worker(wid)
    async with httpx.AsyncClient(transport=recorder.inner, base_url="http://rt.test") as raw:
        document = (await raw.get("/openapi.json", headers={"authorization": f"Bearer {TOKEN}"})).json()
    templates = [
        (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), {m.upper() for m in ops})
        for path, ops in document["paths"].items()
    ]
    assert len(recorder.seen) >= 11
    for method, path in recorder.seen:
        assert any(rx.match(path) and method in methods for rx, methods in templates), f"{method} {path}"


async def test_a_wrong_token_is_unauthorized(served: tuple[RuntimeClient, Recorder, Runtime]) -> None:
    _, recorder, _ = served
    async with RuntimeClient("http://rt.test", token="wrong", transport=recorder) as client:
        with pytest.raises(UnauthorizedError) as info:
            await client.runtime()
    assert info.value.status == 401 and "wrong" not in str(info.value)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_one_pool_drives_two_runtime_processes(tmp_path: Path, anyio_backend: str) -> None:
    config = profiles_toml(tmp_path / "profiles.toml")
    args = ["--store", "memory", "--token", TOKEN, "--config", str(config)]
    async with (
        runtime_process([*args, "--runtime-id", "rt-a"], tmp_path) as url_a,
        runtime_process([*args, "--runtime-id", "rt-b"], tmp_path) as url_b,
    ):
        pool = RuntimePool(
            {"rt-a": {"base_url": url_a, "token": TOKEN}, "rt-b": {"base_url": url_b, "token": TOKEN}},
            retries=RetryPolicy(attempts=2, backoff_s=0.05),
        )
        async with pool:
            refs = {}
            for rid in ("rt-a", "rt-b"):
                worker = await pool.create_worker(rid, worker_id="same-id")
                refs[rid] = worker.worker_ref
                assert worker.worker_ref == WorkerRef(runtime_id=rid, worker_id="same-id")
            for rid, ref in refs.items():
                ack = await pool.send_input(ref, f"hello {rid}")
                assert (await pool.wait_for_run(ref, ack.run_id, timeout=30)).status == "completed"
                assert [e.content async for e in pool.iter_transcript(ref)] == [f"hello {rid}"] * 2
            slow = (await pool.create_worker("rt-a", profile={"kind": "named", "name": "slow"})).worker_ref
            ack = await pool.send_input(slow, "work")
            cancel = await pool.cancel_worker(slow, run_id=ack.run_id)
            assert cancel.cancelled_run_id == ack.run_id
            stop = await pool.stop_worker(refs["rt-b"])
            assert stop.status == "stopped"
            assert (await pool.runtime("rt-a")).workers.total == 2
            assert (await pool.runtime("rt-b")).workers.stopped == 1
        swapped = RuntimePool({"rt-a": {"base_url": url_b, "token": TOKEN}})
        async with swapped:
            with pytest.raises(RuntimeMismatchError):
                await swapped.get_worker(WorkerRef(runtime_id="rt-a", worker_id="same-id"))


async def _take(iterator: AsyncGenerator[Any, None], n: int) -> list[Any]:
    """The first `n` items, closing the generator after (trio wants async generators closed explicitly)."""
    items: list[Any] = []
    with anyio.fail_after(30):
        async with aclosing(iterator):
            async for item in iterator:
                items.append(item)
                if len(items) == n:
                    break
    return items
