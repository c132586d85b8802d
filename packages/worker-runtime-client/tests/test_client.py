"""RuntimeClient against a mocked server (respx): shapes, errors, retries, paging, identity."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import respx
from client_helpers import BASE, T0, body, error, event, input_ack, run, runtime_body, worker, worker_ack

from worker_runtime_client import (
    IdempotencyConflictError,
    InvalidRequestError,
    InvalidWorkerIdError,
    OperationTimeoutError,
    ProtocolError,
    QueueFullError,
    RetryPolicy,
    RuntimeClient,
    RuntimeConnectionError,
    RuntimeMismatchError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
    StoreCorruptError,
    WorkerBusyError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerRuntimeError,
)

FAST = RetryPolicy(attempts=3, backoff_s=0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # respx patches httpx's transports; one backend is enough for the mocked tests


@pytest.fixture
async def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client() -> AsyncIterator[RuntimeClient]:
    async with RuntimeClient(BASE, token="s3cret-token", retries=FAST) as c:
        yield c


def _json(request: httpx.Request) -> object:
    return json.loads(request.content) if request.content else None


async def test_every_call_uses_its_path_method_and_returns_structs(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body())
    mock.get("/v1/workers/w1").respond(200, json=body(worker=worker()))
    mock.get("/v1/workers/w1/runs/run-3").respond(200, json=body(run=run()))
    stop = mock.post("/v1/workers/w1/stop").respond(200, json=body(ack=worker_ack("stopped", event_id=9)))
    delete = mock.delete("/v1/workers/w1").respond(200, json=body(ack=worker_ack("deleted", event_id=10)))
    mock.get("/v1/diagnostics").respond(200, json={"diagnostics": []})
    summary = await client.runtime()
    assert summary.runtime_id == "rt-1" and summary.limits.max_page == 1000
    assert (await client.get_worker("w1")).worker_ref.worker_id == "w1"
    assert (await client.get_run("w1", "run-3")).status == "completed"
    ack = await client.stop_worker("w1", reason="bye")
    assert (ack.status, ack.event_id) == ("stopped", 9)
    assert _json(stop.calls.last.request) == {"reason": "bye"}
    assert (await client.delete_worker("w1")).status == "deleted" and delete.called
    assert await client.diagnostics() == []
    for call in mock.calls:
        assert call.request.headers["authorization"] == "Bearer s3cret-token"
        assert call.request.headers["x-request-id"]


async def test_send_input_always_carries_an_input_id(mock: respx.MockRouter, client: RuntimeClient) -> None:
    route = mock.post("/v1/workers/w1/input").respond(202, json=body(ack=input_ack()))
    ack = await client.send_input("w1", "hello")
    assert ack.run_id == "run-3"
    sent = _json(route.calls.last.request)
    assert isinstance(sent, dict) and sent["content"] == "hello" and sent["kind"] == "user"
    assert sent["input_id"].startswith("in-")
    await client.send_input("w1", "hello", kind="system", input_id="mine")
    assert _json(route.calls.last.request) == {"content": "hello", "kind": "system", "input_id": "mine"}


async def test_a_retried_send_input_reuses_its_input_id(mock: respx.MockRouter, client: RuntimeClient) -> None:
    route = mock.post("/v1/workers/w1/input")
    route.side_effect = [
        httpx.ReadTimeout("slow"),
        httpx.Response(503, json=error("runtime_unavailable", retryable=True)),
        httpx.Response(202, json=body(ack=input_ack(duplicate=True))),
    ]
    ack = await client.send_input("w1", "hello")
    assert ack.duplicate and route.call_count == 3
    ids = {_json(call.request)["input_id"] for call in route.calls}  # type: ignore[index]
    request_ids = {call.request.headers["x-request-id"] for call in route.calls}
    assert len(ids) == 1 and len(request_ids) == 1


async def test_worker_busy_is_never_retried_and_carries_retry_after(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    route = mock.post("/v1/workers/w1/input").respond(
        409, json=error("worker_busy", details={"run_id": "run-1"}, retryable=True), headers={"Retry-After": "1"}
    )
    with pytest.raises(WorkerBusyError) as info:
        await client.send_input("w1", "hello")
    assert route.call_count == 1
    assert (info.value.status, info.value.run_id, info.value.retry_after) == (409, "run-1", 1.0)


async def test_queue_full_is_never_retried_and_carries_retry_after(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    route = mock.post("/v1/workers/w1/input").respond(
        409,
        json=error("queue_full", details={"max_queue": 100, "run_id": "run-1"}, retryable=True),
        headers={"Retry-After": "1"},
    )
    with pytest.raises(QueueFullError) as info:
        await client.send_input("w1", "hello", on_busy="enqueue")
    assert route.call_count == 1
    assert (info.value.status, info.value.retry_after, info.value.retryable) == (409, 1.0, True)
    assert json.loads(route.calls[0].request.content)["on_busy"] == "enqueue"


async def test_send_input_leaves_out_the_default_on_busy_and_sends_the_others(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    route = mock.post("/v1/workers/w1/input").respond(202, json=body(ack=input_ack("run-4")))
    await client.send_input("w1", "a")
    await client.send_input("w1", "b", on_busy="interrupt")
    sent = [json.loads(call.request.content) for call in route.calls]
    assert "on_busy" not in sent[0] and sent[1]["on_busy"] == "interrupt"


async def test_errors_become_core_classes_with_status(mock: respx.MockRouter, client: RuntimeClient) -> None:
    mock.get("/v1/workers/gone").respond(404, json=error("worker_not_found", "no worker 'gone'"))
    mock.get("/v1/workers/bad").respond(500, json=error("store_corrupt", details={"path": "/x", "offset": 4}))
    mock.post("/v1/workers/w1/input").respond(409, json=error("idempotency_conflict"))
    mock.get("/v1/workers/new").respond(418, json=error("teapot_error", "brand new"))
    with pytest.raises(WorkerNotFoundError) as nf:
        await client.get_worker("gone")
    assert nf.value.status == 404 and nf.value.message == "no worker 'gone'"
    with pytest.raises(StoreCorruptError) as corrupt:
        await client.get_worker("bad")
    assert corrupt.value.details == {"path": "/x", "offset": 4}
    with pytest.raises(IdempotencyConflictError):
        await client.send_input("w1", "x", input_id="k")
    with pytest.raises(WorkerRuntimeError) as unknown:
        await client.get_worker("new")
    assert unknown.value.code == "teapot_error" and unknown.value.status == 418


async def test_bodies_outside_the_contract_are_protocol_errors(mock: respx.MockRouter, client: RuntimeClient) -> None:
    mock.get("/v1/workers/html").respond(500, text="<html>oops</html>")
    mock.get("/v1/workers/shape").respond(200, json={"worker": {"nope": 1}})
    mock.get("/v1/workers/text").respond(200, text="not json")
    mock.get("/v1/workers/bytes").respond(200, content=b'{"worker": "\xff\xfe"}')
    mock.get("/v1/workers/ebytes").respond(500, content=b'{"error": {"code": "\xff"}}')
    for wid in ("html", "shape", "text", "bytes", "ebytes"):
        with pytest.raises(ProtocolError) as info:
            await client.get_worker(wid)
        assert info.value.status in (200, 500) and f"/v1/workers/{wid}" in info.value.message


async def test_connection_failures_are_retried_then_raised_with_the_cause(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    route = mock.get("/v1/workers/w1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RuntimeConnectionError) as info:
        await client.get_worker("w1")
    assert route.call_count == 3 and isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.retryable
    mock.get("/v1/workers/w2").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RuntimeTimeoutError):
        await client.get_worker("w2")


async def test_cancel_is_retried_only_when_it_names_a_run(mock: respx.MockRouter, client: RuntimeClient) -> None:
    route = mock.post("/v1/workers/w1/cancel")
    route.side_effect = [httpx.Response(504, json=error("operation_timeout", retryable=True))]
    with pytest.raises(OperationTimeoutError):
        await client.cancel_worker("w1")
    assert route.call_count == 1
    route.side_effect = [httpx.ReadTimeout("slow")]
    with pytest.raises(RuntimeTimeoutError):
        await client.cancel_worker("w1")
    assert route.call_count == 2
    route.side_effect = [
        httpx.Response(504, json=error("operation_timeout", retryable=True)),
        httpx.Response(200, json=body(ack=worker_ack("idle", "run-3", 7))),
    ]
    ack = await client.cancel_worker("w1", run_id="run-3")
    assert ack.cancelled_run_id == "run-3" and route.call_count == 4
    assert _json(route.calls.last.request) == {"reason": None, "run_id": "run-3"}
    route.side_effect = [httpx.ConnectError("down"), httpx.Response(200, json=body(ack=worker_ack()))]
    await client.cancel_worker("w1")  # never connected: nothing was sent, so even this one is retried
    assert route.call_count == 6


async def test_unavailable_is_retried_for_every_call_and_502_only_without_an_envelope(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    delete = mock.delete("/v1/workers/w1")
    delete.side_effect = [
        httpx.Response(503, json=error("runtime_unavailable", retryable=True)),
        httpx.Response(200, json=body(ack=worker_ack("deleted", event_id=3))),
    ]
    assert (await client.delete_worker("w1")).status == "deleted" and delete.call_count == 2
    gateway = mock.get("/v1/workers/w1")
    gateway.side_effect = [httpx.Response(502, text="bad gateway"), httpx.Response(200, json=body(worker=worker()))]
    await client.get_worker("w1")
    assert gateway.call_count == 2
    proxied = mock.get("/v1/workers/w2").respond(502, json=error("internal_error"))
    with pytest.raises(WorkerRuntimeError):
        await client.get_worker("w2")
    assert proxied.call_count == 1
    exhausted = mock.get("/v1/workers/w3").respond(503, json=error("runtime_unavailable", retryable=True))
    with pytest.raises(RuntimeUnavailableError):
        await client.get_worker("w3")
    assert exhausted.call_count == 3


async def test_create_generates_the_id_and_a_retried_create_returns_its_worker(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    create = mock.post("/v1/workers")
    create.side_effect = [httpx.ReadTimeout("lost answer"), httpx.Response(409, json=error("worker_exists"))]
    fetch = mock.get(url__regex=r"/v1/workers/w-[0-9a-f]+$").mock(
        side_effect=lambda request: httpx.Response(200, json=body(worker=worker(request.url.path.rsplit("/", 1)[1])))
    )
    made = await client.create_worker(display_name="x")
    first, second = (_json(call.request) for call in create.calls)
    assert isinstance(first, dict) and first == second and first["worker_id"].startswith("w-")
    assert made.worker_ref.worker_id == first["worker_id"] and fetch.called
    create.side_effect = [httpx.Response(409, json=error("worker_exists"))]
    with pytest.raises(WorkerExistsError):  # answered at once: somebody else has that id
        await client.create_worker(worker_id="taken")


async def test_bad_ids_and_bad_create_fields_fail_before_sending(mock: respx.MockRouter, client: RuntimeClient) -> None:
    for bad in ["../x", "a/b", "", "x\n"]:
        with pytest.raises(InvalidWorkerIdError):
            await client.get_worker(bad)
    with pytest.raises(WorkerRuntimeError):
        await client.create_worker(intent={"kind": "nonsense"})
    assert not mock.calls


async def test_pages_are_followed(mock: respx.MockRouter, client: RuntimeClient) -> None:
    def workers(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        ids = ["a", "b"] if after is None else ["c"]
        summaries = [
            {k: v for k, v in body(worker=worker(i))["worker"].items() if k in {
                "worker_ref", "display_name", "display_ref", "status", "profile", "created_at", "updated_at",
                "active_run"}}
            for i in ids
        ]  # fmt: skip
        return httpx.Response(200, json={"workers": summaries, "next_after": "b" if after is None else None})

    mock.get("/v1/workers").mock(side_effect=workers)
    assert [w.worker_ref.worker_id async for w in client.iter_workers(page_size=2)] == ["a", "b", "c"]

    def transcript(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        items = [
            {"sequence": s, "role": "user", "content": f"m{s}", "run_id": None, "created_at": "x", "event_id": s + 1}
            for s in range(start, min(start + 2, 5))
        ]
        nxt = start + len(items) if start + len(items) < 5 else None
        page = {"worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"}, "start": start, "limit": 2,
                "total_items": 5, "items": items, "next_start": nxt}  # fmt: skip
        return httpx.Response(200, json={"transcript": page})

    mock.get("/v1/workers/w1/transcript").mock(side_effect=transcript)
    assert [e.content async for e in client.iter_transcript("w1", page_size=2)] == ["m0", "m1", "m2", "m3", "m4"]


async def test_one_run_s_transcript_is_asked_for_by_run_id_page_after_page(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    def transcript(request: httpx.Request) -> httpx.Response:
        assert request.url.params["run_id"] == "run-7"
        start = max(int(request.url.params["start"]), 3)  # the run's entries are sequences 3 to 5
        items = [
            {"sequence": s, "role": "assistant", "content": f"m{s}", "run_id": "run-7", "created_at": "x",
             "event_id": s + 1, "data": None}
            for s in range(start, min(start + 2, 6))
        ]  # fmt: skip
        nxt = start + len(items) if start + len(items) < 6 else None
        page = {"worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"}, "start": start, "limit": 2,
                "total_items": 3, "items": items, "next_start": nxt}  # fmt: skip
        return httpx.Response(200, json={"transcript": page})

    route = mock.get("/v1/workers/w1/transcript").mock(side_effect=transcript)
    entries = [e async for e in client.iter_transcript("w1", page_size=2, run_id="run-7")]
    assert [e.content for e in entries] == ["m3", "m4", "m5"]
    assert [r.request.url.params["start"] for r in route.calls] == ["0", "5"]
    assert (await client.transcript("w1", run_id="run-7")).total_items == 3


async def test_watch_events_resumes_from_its_cursor_and_never_repeats(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body())
    route = mock.get("/v1/events")
    route.side_effect = [
        httpx.Response(200, json={"events": [event(1), event(2)], "next_after": 2, "has_more": False}),
        httpx.ConnectError("dropped"),
        httpx.Response(200, json={"events": [event(2), event(3)], "next_after": 3, "has_more": False}),
        httpx.Response(200, json={"events": [event(4)], "next_after": 4, "has_more": False}),
    ]
    seen = []
    async for ev in client.watch_events(wait=5):
        seen.append(ev.id)
        if len(seen) == 4:
            break
    assert seen == [1, 2, 3, 4]
    afters = [call.request.url.params["after"] for call in route.calls]
    assert afters == ["0", "2", "2", "3"]
    assert {call.request.url.params["wait"] for call in route.calls} == {"5"}


async def test_wait_for_run_long_polls_the_workers_events(mock: respx.MockRouter, client: RuntimeClient) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body())
    mock.get("/v1/workers/w1").respond(200, json=body(worker=worker(last_event_id=5)))
    runs = mock.get("/v1/workers/w1/runs/run-3")
    runs.side_effect = [
        httpx.Response(200, json=body(run=run(status="running"))),
        httpx.Response(200, json=body(run=run(status="timed_out"))),
    ]
    events = mock.get("/v1/events")
    events.side_effect = [
        httpx.Response(200, json={"events": [], "next_after": 5, "has_more": False}),
        httpx.Response(200, json={"events": [event(6, "run_timed_out", "run-3")], "next_after": 6, "has_more": False}),
    ]
    finished = await client.wait_for_run("w1", "run-3", poll_wait=1)
    assert finished.status == "timed_out"
    params = [dict(call.request.url.params) for call in events.calls]
    assert params == [{"after": "5", "worker_id": "w1", "wait": "1"}, {"after": "5", "worker_id": "w1", "wait": "1"}]


async def test_long_polls_never_ask_more_than_the_servers_max_wait_read_once(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    identity = mock.get("/v1/runtime").respond(200, json=runtime_body(max_wait_s=3))
    mock.get("/v1/workers/w1").respond(200, json=body(worker=worker(last_event_id=5)))
    running, done = body(run=run(status="running")), body(run=run())
    runs = mock.get("/v1/workers/w1/runs/run-3")
    runs.side_effect = [httpx.Response(200, json=b) for b in (running, done, running, done)]
    page = {"events": [event(6, "run_completed", "run-3")], "next_after": 6, "has_more": False}
    events = mock.get("/v1/events").respond(200, json=page)
    assert (await client.wait_for_run("w1", "run-3")).status == "completed"  # default: 25, above the server's 3
    assert (await client.wait_for_run("w1", "run-3", poll_wait=1)).status == "completed"  # the caller's, smaller
    async for _ in client.watch_events(wait=60):
        break
    assert [call.request.url.params["wait"] for call in events.calls] == ["3.0", "1", "3.0"]
    assert identity.call_count == 1
    for bad in (-1, float("nan")):
        with pytest.raises(InvalidRequestError):
            await client.wait_for_run("w1", "run-3", poll_wait=bad)
    assert len(events.calls) == 3


async def test_a_runtime_restarted_with_a_lower_max_wait_is_read_again(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    identity = mock.get("/v1/runtime")
    identity.side_effect = [
        httpx.Response(200, json=runtime_body(max_wait_s=20)),
        httpx.Response(200, json=runtime_body(max_wait_s=2)),
    ]
    events = mock.get("/v1/events")
    events.side_effect = [
        httpx.Response(200, json={"events": [event(1)], "next_after": 1, "has_more": False}),
        httpx.Response(422, json=error("invalid_request", "wait must be 0 to 2 seconds", {"field": "wait"})),
        httpx.Response(200, json={"events": [event(2)], "next_after": 2, "has_more": False}),
    ]
    seen = []
    async for ev in client.watch_events():
        seen.append(ev.id)
        if len(seen) == 2:
            break
    assert seen == [1, 2]
    assert [call.request.url.params["wait"] for call in events.calls] == ["20.0", "20.0", "2.0"]
    assert identity.call_count == 2


async def test_a_server_that_allows_no_wait_is_polled_with_a_pause_not_a_spin(
    mock: respx.MockRouter, client: RuntimeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body(max_wait_s=0))
    events = mock.get("/v1/events")
    events.side_effect = [
        httpx.Response(200, json={"events": [], "next_after": 0, "has_more": False}),
        httpx.Response(200, json={"events": [event(1)], "next_after": 1, "has_more": False}),
        httpx.Response(200, json={"events": [event(2)], "next_after": 2, "has_more": False}),
    ]
    pauses: list[float] = []
    sleep = anyio.sleep

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await sleep(0)

    monkeypatch.setattr(anyio, "sleep", recorded_sleep)
    seen = []
    async for ev in client.watch_events():
        seen.append(ev.id)
        if len(seen) == 2:
            break
    assert seen == [1, 2]
    assert {call.request.url.params["wait"] for call in events.calls} == {"0.0"}
    assert pauses == [1.0]  # after the empty page only


async def test_a_client_for_another_runtime_sends_no_command(mock: respx.MockRouter) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body("rt-other"))
    command = mock.post("/v1/workers/w1/input").respond(202, json=body(ack=input_ack()))
    async with RuntimeClient(BASE, runtime_id="rt-1", retries=FAST) as client:
        with pytest.raises(RuntimeMismatchError) as info:
            await client.send_input("w1", "hi")
    assert not command.called and info.value.details == {"expected": "rt-1", "actual": "rt-other"}


async def test_the_right_runtime_is_checked_once(mock: respx.MockRouter) -> None:
    identity = mock.get("/v1/runtime").respond(200, json=runtime_body("rt-1"))
    mock.post("/v1/workers/w1/input").respond(202, json=body(ack=input_ack()))
    async with RuntimeClient(BASE, runtime_id="rt-1", retries=FAST) as client:
        await client.send_input("w1", "a")
        await client.send_input("w1", "b")
    assert identity.call_count == 1


async def test_the_token_never_shows(mock: respx.MockRouter) -> None:
    mock.get("/v1/workers/w1").mock(side_effect=httpx.ConnectError("refused"))
    mock.get("/v1/workers/w2").respond(401, json=error("unauthorized"))
    async with RuntimeClient(BASE, token="s3cret-token", retries=FAST) as client:
        assert "s3cret" not in repr(client)
        for wid in ("w1", "w2"):
            with pytest.raises(WorkerRuntimeError) as info:
                await client.get_worker(wid)
            assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value)


async def test_a_closed_client_refuses() -> None:
    client = RuntimeClient(BASE)
    async with client:
        pass
    with pytest.raises(RuntimeError):
        await client.get_worker("w1")
    with pytest.raises(RuntimeError):
        async with client:
            pass


async def test_a_callers_own_httpx_client_is_used_and_left_open(mock: respx.MockRouter) -> None:
    mock.get("/v1/workers/w1").respond(200, json=body(worker=worker()))
    async with httpx.AsyncClient(base_url=BASE) as own:
        async with RuntimeClient(BASE, client=own) as client:
            await client.get_worker("w1")
        assert not own.is_closed


# --- a newer (v1.1) server: new kinds, statuses, codes and fields decode -------------------------------------

PENDING = {"request_id": "req-1", "kind": "question", "prompt": "which?", "data": {}, "created_at": T0,
           "expires_at": None}  # fmt: skip


def _newer(body_: dict[str, object], **fields: object) -> dict[str, object]:
    """`body_` (an envelope of one struct) with fields a newer server adds."""
    ((name, inner),) = body_.items()
    assert isinstance(inner, dict)
    return {name: {**inner, **fields}}


async def test_a_newer_servers_answers_decode(mock: respx.MockRouter, client: RuntimeClient) -> None:
    summary = runtime_body()
    summary["runtime"]["limits"].update(stream_heartbeat_s=15, max_streams=1000, max_queue=100, request_timeout_s=1)
    mock.get("/v1/runtime").respond(200, json=summary)
    waiting = _newer(body(run=run(status="running")), status="waiting", pending_request=PENDING)
    mock.get("/v1/workers/w1/runs/run-3").respond(200, json=waiting)
    worker_body = _newer(body(worker=worker()), queued_runs=["run-4"])
    worker_body["worker"]["active_run"] = waiting["run"]  # type: ignore[index]
    mock.get("/v1/workers/w1").respond(200, json=worker_body)
    queued = _newer(body(ack=input_ack("run-4")), input_sequence=None, queued=True)
    mock.post("/v1/workers/w1/input").respond(202, json=queued)
    started = event(7, "run_started", "run-4", {"input_sequence": 2, "input_id": "in-1", "kind": "user"})
    mock.get("/v1/events").respond(200, json={"events": [started], "next_after": 7, "has_more": False})
    item = {"sequence": 0, "role": "assistant", "content": "hi", "run_id": "run-3", "created_at": T0, "event_id": 3,
            "data": None}  # fmt: skip
    page = {"worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"}, "start": 0, "limit": 100, "total_items": 1,
            "items": [item], "next_start": None}  # fmt: skip
    mock.get("/v1/workers/w1/transcript").respond(200, json={"transcript": page})

    assert (await client.runtime()).limits.max_page == 1000  # the new limits are ignored
    run_ = await client.get_run("w1", "run-3")
    assert run_.status == "waiting"
    detail = await client.get_worker("w1")
    assert detail.active_run is not None and detail.active_run.status == "waiting"
    ack = await client.send_input("w1", "later")
    assert (ack.run_id, ack.input_sequence) == ("run-4", None)
    (ev,) = (await client.events()).events
    assert (ev.kind, ev.data) == ("run_started", {"input_sequence": 2, "input_id": "in-1", "kind": "user"})
    assert [e.content for e in (await client.transcript("w1")).items] == ["hi"]


async def test_a_new_error_code_raises_the_base_class_with_its_code_and_is_not_retried(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    route = mock.post("/v1/workers/w1/input").respond(
        409,
        json=error("queue_paused", "the queue is paused", {"max_queue": 100}, retryable=True),
        headers={"Retry-After": "1"},
    )
    with pytest.raises(WorkerRuntimeError) as info:
        await client.send_input("w1", "one more")
    assert type(info.value).__mro__[1] is WorkerRuntimeError
    assert (info.value.code, info.value.status, info.value.retryable) == ("queue_paused", 409, True)
    assert info.value.details == {"max_queue": 100}
    assert route.call_count == 1


async def test_wait_for_run_waits_through_statuses_it_does_not_know(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    mock.get("/v1/runtime").respond(200, json=runtime_body())
    mock.get("/v1/workers/w1").respond(200, json=body(worker=worker(last_event_id=5)))
    runs = mock.get("/v1/workers/w1/runs/run-3")
    runs.side_effect = [
        httpx.Response(200, json=_newer(body(run=run(status="running")), status="queued", input_sequence=None)),
        httpx.Response(200, json=_newer(body(run=run(status="running")), status="waiting", pending_request=PENDING)),
        httpx.Response(200, json=body(run=run(status="completed"))),
    ]
    events = mock.get("/v1/events")
    events.side_effect = [
        httpx.Response(200, json={"events": [event(6, "run_started", "run-3")], "next_after": 6, "has_more": False}),
        httpx.Response(200, json={"events": [event(7, "run_completed", "run-3")], "next_after": 7, "has_more": False}),
    ]
    assert (await client.wait_for_run("w1", "run-3", poll_wait=1)).status == "completed"
    assert runs.call_count == 3


# --- requests for input --------------------------------------------------------------------------------------


def _respond_ack(duplicate: bool = False) -> dict[str, object]:
    ack = {
        "worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"},
        "run_id": "run-3",
        "request_id": "req-4",
        "status": "running",
        "event_id": 5,
        "duplicate": duplicate,
    }
    return {"ack": ack}


async def test_respond_sends_a_response_id_and_retries_with_it(mock: respx.MockRouter, client: RuntimeClient) -> None:
    route = mock.post("/v1/workers/w1/runs/run-3/respond")
    route.side_effect = [
        httpx.Response(503, json=error("runtime_unavailable", retryable=True)),
        httpx.Response(504, json=error("operation_timeout", retryable=True)),
        httpx.Response(200, json=_respond_ack(duplicate=True)),
        httpx.Response(200, json=_respond_ack()),
    ]
    ack = await client.respond("w1", "run-3", "req-4", approved=True, content="ok")
    assert (ack.request_id, ack.status, ack.event_id, ack.duplicate) == ("req-4", "running", 5, True)
    sent = [_json(call.request) for call in route.calls]
    assert len(sent) == 3 and len({s["response_id"] for s in sent}) == 1  # type: ignore[index]
    assert sent[0] == {"request_id": "req-4", "approved": True, "content": "ok", "response_id": sent[0]["response_id"]}  # type: ignore[index]
    await client.respond("w1", "run-3", "req-4", content="blue", response_id="mine")
    assert _json(route.calls.last.request) == {
        "request_id": "req-4",
        "approved": None,
        "content": "blue",
        "response_id": "mine",
    }


async def test_respond_raises_the_request_codes_typed_and_checks_ids_first(
    mock: respx.MockRouter, client: RuntimeClient
) -> None:
    from worker_runtime_client import RequestClosedError, RequestNotFoundError

    route = mock.post("/v1/workers/w1/runs/run-3/respond")
    route.side_effect = [
        httpx.Response(409, json=error("request_closed", details={"request_id": "req-4", "outcome": "timed_out"})),
        httpx.Response(404, json=error("request_not_found")),
    ]
    with pytest.raises(RequestClosedError) as closed:
        await client.respond("w1", "run-3", "req-4", approved=True)
    assert (closed.value.status, closed.value.details["outcome"]) == (409, "timed_out")
    with pytest.raises(RequestNotFoundError):
        await client.respond("w1", "run-3", "req-4", approved=True)
    assert route.call_count == 2  # neither is retried
    with pytest.raises(InvalidRequestError):
        await client.respond("w1", "run-3", "bad id", approved=True)
    with pytest.raises(InvalidRequestError):
        await client.respond("w1", "run-3", "req-4", approved=True, response_id="")
    assert route.call_count == 2


async def test_list_requests_decodes_typed_pending_requests(mock: respx.MockRouter, client: RuntimeClient) -> None:
    pending = {
        "request_id": "req-4",
        "kind": "approval",
        "prompt": "ship it?",
        "data": {"env": "prod"},
        "created_at": T0,
        "expires_at": T0,
    }
    found = {"worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"}, "run_id": "run-3", "request": pending}
    route = mock.get("/v1/requests").respond(200, json={"requests": [found], "next_after": 4})
    page = await client.list_requests(after=2, limit=1)
    assert page.next_after == 4 and page.requests[0].request.data == {"env": "prod"}
    assert page.requests[0].request.kind == "approval"
    assert dict(route.calls.last.request.url.params) == {"after": "2", "limit": "1"}
