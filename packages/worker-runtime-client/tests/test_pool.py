"""RuntimePool: many runtimes by id, WorkerRef routing, config files and token sources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx
from client_helpers import body, event, input_ack, run, runtime_body, worker
from stream_helpers import FakeStreamServer, run_info, serve_run
from stream_helpers import entry as stream_entry
from stream_helpers import event as stream_event

from worker_runtime_client import (
    EntryDone,
    RunDone,
    RuntimeMismatchError,
    RuntimePool,
    TextDelta,
    UnknownRuntimeError,
    WorkerRef,
)
from worker_runtime_core import ConfigError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_worker_refs_go_to_their_runtime(mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_EU_TOKEN", "eu-secret")
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-eu"))
    mock.get("http://us.test/v1/runtime").respond(200, json=runtime_body("rt-us"))
    eu = mock.post("http://eu.test/v1/workers/w1/input").respond(202, json=body(ack=input_ack()))
    us = mock.get("http://us.test/v1/workers/w1").respond(200, json=body(worker=worker()))
    pool = RuntimePool(
        {"rt-eu": {"base_url": "http://eu.test", "token_env": "RT_EU_TOKEN"}, "rt-us": {"base_url": "http://us.test"}}
    )
    async with pool:
        await pool.send_input(WorkerRef(runtime_id="rt-eu", worker_id="w1"), "hi")
        await pool.get_worker(WorkerRef(runtime_id="rt-us", worker_id="w1"))
        assert pool.client("rt-eu") is pool.client("rt-eu")  # one pooled client per runtime
        with pytest.raises(UnknownRuntimeError):
            await pool.get_worker(WorkerRef(runtime_id="rt-asia", worker_id="w1"))
    assert eu.calls.last.request.headers["authorization"] == "Bearer eu-secret"
    assert "authorization" not in us.calls.last.request.headers
    assert pool.runtime_ids == ["rt-eu", "rt-us"] and "secret" not in repr(pool)


async def test_the_pool_passes_on_busy_to_the_worker_s_runtime(mock: respx.MockRouter) -> None:
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-eu"))
    queued = body(ack=input_ack())
    queued["ack"].update(input_sequence=None, queued=True)  # type: ignore[union-attr]
    route = mock.post("http://eu.test/v1/workers/w1/input").respond(202, json=queued)
    async with RuntimePool({"rt-eu": {"base_url": "http://eu.test"}}) as pool:
        ack = await pool.send_input(WorkerRef(runtime_id="rt-eu", worker_id="w1"), "later", on_busy="enqueue")
    assert ack.queued and ack.input_sequence is None
    assert json.loads(route.calls.last.request.content)["on_busy"] == "enqueue"


async def test_answers_and_open_requests_go_to_their_runtime(mock: respx.MockRouter) -> None:
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-eu"))
    mock.get("http://us.test/v1/runtime").respond(200, json=runtime_body("rt-us"))
    ack = {
        "worker_ref": {"runtime_id": "rt-us", "worker_id": "w1"},
        "run_id": "run-3",
        "request_id": "req-4",
        "status": "running",
        "event_id": 5,
        "duplicate": False,
    }
    us = mock.post("http://us.test/v1/workers/w1/runs/run-3/respond").respond(200, json={"ack": ack})
    eu = mock.get("http://eu.test/v1/requests").respond(200, json={"requests": [], "next_after": None})
    pool = RuntimePool({"rt-eu": {"base_url": "http://eu.test"}, "rt-us": {"base_url": "http://us.test"}})
    async with pool:
        answer = await pool.respond(WorkerRef(runtime_id="rt-us", worker_id="w1"), "run-3", "req-4", approved=True)
        assert answer.request_id == "req-4" and us.call_count == 1
        assert (await pool.list_requests("rt-eu")).requests == [] and eu.call_count == 1


async def test_a_runtime_answering_under_another_id_is_refused(mock: respx.MockRouter) -> None:
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-impostor"))
    command = mock.post("http://eu.test/v1/workers/w1/stop").respond(200)
    async with RuntimePool({"rt-eu": {"base_url": "http://eu.test"}}) as pool:
        with pytest.raises(RuntimeMismatchError):
            await pool.stop_worker(WorkerRef(runtime_id="rt-eu", worker_id="w1"))
    assert not command.called


async def test_the_pool_watches_events_and_lists_workers_per_runtime(mock: respx.MockRouter) -> None:
    identities = {}
    for rid, url, max_wait in (("rt-eu", "http://eu.test", 4), ("rt-us", "http://us.test", 30)):
        identities[rid] = mock.get(f"{url}/v1/runtime").respond(200, json=runtime_body(rid, max_wait_s=max_wait))

    def workers(request: httpx.Request) -> httpx.Response:
        first = request.url.params.get("after") is None
        page = [body(worker=worker("a" if first else "b"))["worker"]]
        return httpx.Response(200, json={"workers": page, "next_after": "a" if first else None})

    listed = mock.get("http://eu.test/v1/workers").mock(side_effect=workers)
    page = {"events": [event(7, "run_completed", "run-3"), event(8)], "next_after": 8, "has_more": False}
    eu_events = mock.get("http://eu.test/v1/events").respond(200, json=page)
    us_events = mock.get("http://us.test/v1/events").respond(200, json=page)
    mock.get("http://eu.test/v1/workers/w1").respond(200, json=body(worker=worker(last_event_id=6)))
    runs = mock.get("http://eu.test/v1/workers/w1/runs/run-3")
    runs.side_effect = [httpx.Response(200, json=body(run=run(status=s))) for s in ("running", "completed")]
    items = [{"sequence": 0, "role": "user", "content": "hi", "run_id": None, "created_at": "x", "event_id": 1}]
    page_of_one = {"worker_ref": {"runtime_id": "rt-eu", "worker_id": "w1"}, "start": 0, "limit": 1,
                   "total_items": 1, "items": items, "next_start": None}  # fmt: skip
    transcript = mock.get("http://eu.test/v1/workers/w1/transcript").respond(200, json={"transcript": page_of_one})
    pool = RuntimePool({"rt-eu": {"base_url": "http://eu.test"}, "rt-us": {"base_url": "http://us.test"}})
    async with pool:
        assert [w.worker_ref.worker_id async for w in pool.iter_workers("rt-eu", status="idle", page_size=1)] == [
            "a",
            "b",
        ]
        seen = []
        async for ev in pool.watch_events("rt-eu", 6, worker_id="w1"):
            seen.append(ev.id)
            if len(seen) == 2:
                break
        assert seen == [7, 8]
        async for _ in pool.watch_events("rt-us", wait=10):
            break
        ref = WorkerRef(runtime_id="rt-eu", worker_id="w1")
        assert (await pool.wait_for_run(ref, "run-3", poll_wait=60)).status == "completed"
        assert [e.content async for e in pool.iter_transcript(ref, page_size=1)] == ["hi"]
        with pytest.raises(UnknownRuntimeError):
            pool.watch_events("rt-asia")
    assert [dict(c.request.url.params) for c in listed.calls] == [
        {"status": "idle", "limit": "1"},
        {"status": "idle", "limit": "1", "after": "a"},
    ]
    assert [dict(c.request.url.params) for c in eu_events.calls] == [
        {"after": "6", "worker_id": "w1", "wait": "4.0"},  # the default 25, capped at rt-eu's max_wait_s
        {"after": "6", "worker_id": "w1", "wait": "4.0"},  # wait_for_run's 60, capped the same
    ]
    assert [c.request.url.params["wait"] for c in us_events.calls] == ["10"]
    assert transcript.calls.last.request.url.params["limit"] == "1"
    assert {rid: route.call_count for rid, route in identities.items()} == {"rt-eu": 1, "rt-us": 1}


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_pools_load_from_toml_and_json(tmp_path: Path, suffix: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-secret\n")
    runtimes = {
        "rt-1": {"base_url": "http://10.0.0.5:8787", "token_file": str(token_file)},
        "rt-2": {"base_url": "http://10.0.0.6:8787", "token": "inline"},
    }
    path = tmp_path / f"runtimes{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"runtimes": runtimes}))
    else:
        path.write_text(
            "".join(
                f"[runtimes.{rid}]\n" + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
                for rid, entry in runtimes.items()
            )
        )
    pool = RuntimePool.from_file(path)
    assert pool.runtime_ids == ["rt-1", "rt-2"]
    assert pool.client("rt-1")._headers["authorization"] == "Bearer file-secret"
    assert pool.client("rt-1").base_url == "http://10.0.0.5:8787"


def test_bad_pool_configs_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="NOPE_TOKEN"):
        RuntimePool({"rt-1": {"base_url": "http://x", "token_env": "NOPE_TOKEN"}})
    with pytest.raises(ConfigError, match="at most one"):
        RuntimePool({"rt-1": {"base_url": "http://x", "token": "a", "token_env": "B"}})
    with pytest.raises(ConfigError, match="invalid runtime id"):
        RuntimePool({"../rt": {"base_url": "http://x"}})
    with pytest.raises(ConfigError):
        RuntimePool({"rt-1": {"base_url": "http://x", "colour": "red"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtimes.rt-1]\nbase_url = 5\n")
    with pytest.raises(ConfigError, match=str(bad)):
        RuntimePool.from_file(bad)


async def test_the_pool_streams_each_runtimes_events_from_that_runtime() -> None:
    servers = {
        rid: FakeStreamServer(events=[stream_event(i, runtime_id=rid) for i in (1, 2)], runtime_id=rid)
        for rid in ("rt-a", "rt-b")
    }
    runtimes = {rid: {"base_url": f"http://{rid}.test"} for rid in servers}
    transports = {rid: server.transport() for rid, server in servers.items()}
    async with RuntimePool(runtimes, transports=transports) as pool:
        async with pool.stream_events("rt-b", after=0, worker_id="w1") as stream:
            got = [await stream.__anext__(), await stream.__anext__()]
            assert stream.runtime_id == "rt-b" and stream.cursor == 2
        with pytest.raises(UnknownRuntimeError):
            pool.stream_events("rt-c")
    assert [e.worker_ref.runtime_id for e in got if e.worker_ref] == ["rt-b", "rt-b"]
    assert servers["rt-a"].requests == []
    assert servers["rt-b"].requests[0].url.params["worker_id"] == "w1"


async def test_the_pool_follows_a_run_on_the_runtime_its_ref_names() -> None:
    servers = {rid: FakeStreamServer(runtime_id=rid) for rid in ("rt-1", "rt-2")}
    entries = [stream_entry(0, "q", role="user"), stream_entry(1, "answer")]
    serve_run(servers["rt-1"], run=run_info(status="completed"), entries=entries, last_event_id=3)
    runtimes = {rid: {"base_url": f"http://{rid}.test"} for rid in servers}
    transports = {rid: server.transport() for rid, server in servers.items()}
    async with RuntimePool(runtimes, transports=transports) as pool:
        async with pool.follow_run(WorkerRef(runtime_id="rt-1", worker_id="w1"), "run-1") as follow:
            items = [item async for item in follow]
    assert [type(i) for i in items] == [TextDelta, EntryDone, RunDone]
    assert isinstance(items[0], TextDelta) and items[0].text == "answer"
