"""Every endpoint of the wire contract (docs/wire.md): success status and envelope, and its typical error codes."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from http_helpers import TOKEN, Gate, client_for, error_of, make_runtime, serving
from store_faults import FaultyStore

from worker_runtime_core import (
    Engine,
    Limits,
    MemoryStore,
    ProfileConfig,
    RunContext,
    Runtime,
    RuntimeUnavailableError,
    StoreCorruptError,
)
from worker_runtime_core.stores import Batch
from worker_runtime_http import create_app
from worker_runtime_http import routes as routes_module
from worker_runtime_store_fs import FsRuntimeStore

GATE = {"kind": "named", "name": "gate"}


class RefusingStore(MemoryStore):
    """A memory store that refuses writes on demand, in its own words naming its files."""

    refuse = False

    async def write(self, batch: Batch) -> None:
        if self.refuse:
            raise RuntimeUnavailableError("cannot append to /srv/rt/events/00000000000000000001.jsonl: No space")
        await super().write(batch)


async def create(client: httpx.AsyncClient, worker_id: str = "w1", **fields: object) -> httpx.Response:
    response = await client.post("/v1/workers", json={"worker_id": worker_id, **fields})
    assert response.status_code == 201, response.text
    return response


async def busy_worker(client: httpx.AsyncClient, gate: Gate, worker_id: str = "w1") -> str:
    """A Worker on the gate profile with a run waiting for the gate; returns the run id."""
    await create(client, worker_id, profile=GATE)
    response = await client.post(f"/v1/workers/{worker_id}/input", json={"content": "hi"})
    assert response.status_code == 202
    await gate.started.wait()
    return str(response.json()["ack"]["run_id"])


# --- runtime -------------------------------------------------------------------------------------------------


async def test_runtime_summary(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.get("/v1/runtime")
    assert response.status_code == 200
    runtime = response.json()["runtime"]
    assert runtime["runtime_id"] == "rt-test"
    assert runtime["status"] == "running"
    assert runtime["workers"] == {"idle": 1, "busy": 0, "stopped": 0, "total": 1}
    assert runtime["store"] == {"kind": "memory", "path": None, "fsync": None}
    assert runtime["limits"]["max_page"] == 1000
    assert "gate" in runtime["capabilities"]["profiles"]


# --- workers -------------------------------------------------------------------------------------------------


async def test_create_worker_is_201_with_the_detail(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"worker_id": "w1", "display_name": "One", "profile": GATE})
    assert response.status_code == 201
    worker = response.json()["worker"]
    assert worker["worker_ref"] == {"runtime_id": "rt-test", "worker_id": "w1"}
    assert worker["display_name"] == "One"
    assert worker["profile"] == "gate"
    assert worker["status"] == "idle"


async def test_an_empty_create_body_makes_a_worker_with_a_generated_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers")
    assert response.status_code == 201
    assert response.json()["worker"]["worker_ref"]["worker_id"].startswith("w-")


async def test_create_an_existing_worker_is_409_worker_exists(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post("/v1/workers", json={"worker_id": "w1"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "worker_exists"


async def test_create_beyond_max_workers_is_409_capacity_exceeded(gate: Gate) -> None:
    async with serving(gate, limits=Limits(max_workers=1)) as (_, client):
        await create(client)
        response = await client.post("/v1/workers", json={"worker_id": "w2"})
        assert response.status_code == 409
        assert error_of(response)["code"] == "capacity_exceeded"
        assert (await client.get("/v1/workers")).json()["workers"][0]["worker_ref"]["worker_id"] == "w1"


async def test_create_with_an_unknown_profile_is_422_unknown_profile(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"profile": {"kind": "named", "name": "nope"}})
    assert response.status_code == 422
    assert error_of(response)["code"] == "unknown_profile"
    assert (await client.get("/v1/runtime")).json()["runtime"]["workers"]["total"] == 0


async def test_create_with_a_capability_the_engine_lacks_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"requested_capabilities": [{"name": "web"}]})
    assert response.status_code == 422
    assert error_of(response)["code"] == "unsupported_capability"


async def test_create_with_a_bad_worker_id_in_the_body_is_422_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"worker_id": "../etc"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("worker_id: invalid id")
    assert error["details"] == {"path": "$.worker_id", "field": "worker_id"}


async def test_list_workers_pages_by_worker_id(client: httpx.AsyncClient) -> None:
    for wid in ("w3", "w1", "w2"):
        await create(client, wid)
    first = (await client.get("/v1/workers", params={"limit": 2})).json()
    assert [w["worker_ref"]["worker_id"] for w in first["workers"]] == ["w1", "w2"]
    assert first["next_after"] == "w2"
    rest = (await client.get("/v1/workers", params={"limit": 2, "after": "w2"})).json()
    assert [w["worker_ref"]["worker_id"] for w in rest["workers"]] == ["w3"]
    assert rest["next_after"] is None


async def test_list_workers_filters_by_status(client: httpx.AsyncClient) -> None:
    await create(client, "w1")
    await create(client, "w2")
    await client.post("/v1/workers/w2/stop")
    page = (await client.get("/v1/workers?status=stopped")).json()
    assert [w["worker_ref"]["worker_id"] for w in page["workers"]] == ["w2"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=1001", "limit_too_large"),
        ("limit=0", "invalid_request"),
        ("limit=ten", "invalid_request"),
        ("status=asleep", "invalid_request"),
        ("after=..", "invalid_request"),
        ("colour=red", "invalid_request"),
        ("limit=1&limit=2", "invalid_request"),
    ],
)
async def test_bad_list_queries_are_422(client: httpx.AsyncClient, query: str, code: str) -> None:
    response = await client.get(f"/v1/workers?{query}")
    assert response.status_code == 422
    assert error_of(response)["code"] == code


async def test_get_worker_detail(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.get("/v1/workers/w1")
    assert response.status_code == 200
    worker = response.json()["worker"]
    assert worker["transcript_len"] == 0
    assert worker["intent"] == {"kind": "assistant", "purpose": None}
    assert worker["last_run"] is None


async def test_get_an_unknown_worker_is_404_worker_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers/ghost")
    assert response.status_code == 404
    assert error_of(response)["code"] == "worker_not_found"


@pytest.mark.parametrize("bad", ["-w", ".hidden", "a%20b", "x" * 129, "w%0A"])
async def test_a_path_worker_id_that_breaks_the_pattern_is_400(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get(f"/v1/workers/{bad}")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_worker_id"


async def test_delete_a_stopped_worker(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.post("/v1/workers/w1/stop")
    response = await client.delete("/v1/workers/w1")
    assert response.status_code == 200
    ack = response.json()["ack"]
    assert ack["status"] == "deleted"
    assert ack["cancelled_run_id"] is None
    assert isinstance(ack["event_id"], int)
    assert (await client.get("/v1/workers/w1")).status_code == 404


async def test_delete_a_worker_that_is_not_stopped_is_409(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.delete("/v1/workers/w1")
    assert response.status_code == 409
    assert error_of(response)["code"] == "worker_not_stopped"
    assert (await client.get("/v1/workers/w1")).status_code == 200


async def test_delete_an_unknown_worker_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/workers/ghost")
    assert response.status_code == 404
    assert error_of(response)["code"] == "worker_not_found"


# --- input and runs ------------------------------------------------------------------------------------------


async def test_input_is_202_with_the_ack_and_the_run_completes(rt: Runtime, client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post("/v1/workers/w1/input", json={"content": "hello"})
    assert response.status_code == 202
    ack = response.json()["ack"]
    assert ack["worker_ref"] == {"runtime_id": "rt-test", "worker_id": "w1"}
    assert ack["input_sequence"] == 0
    assert ack["duplicate"] is False
    await rt.wait_for_run("w1", ack["run_id"])
    run = (await client.get(f"/v1/workers/w1/runs/{ack['run_id']}")).json()["run"]
    assert run["status"] == "completed"
    assert run["run_id"] == ack["run_id"]


async def test_a_repeated_input_id_returns_the_first_ack(client: httpx.AsyncClient) -> None:
    await create(client)
    body = {"content": "hello", "input_id": "in-1"}
    first = (await client.post("/v1/workers/w1/input", json=body)).json()["ack"]
    again = await client.post("/v1/workers/w1/input", json=body)
    assert again.status_code == 202
    assert again.json()["ack"] == {**first, "duplicate": True}


async def test_a_reused_input_id_with_other_content_is_409(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.post("/v1/workers/w1/input", json={"content": "hello", "input_id": "in-1"})
    response = await client.post("/v1/workers/w1/input", json={"content": "other", "input_id": "in-1"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_conflict"


async def test_input_to_a_busy_worker_is_409_naming_the_run_with_retry_after(
    client: httpx.AsyncClient, gate: Gate
) -> None:
    run_id = await busy_worker(client, gate)
    response = await client.post("/v1/workers/w1/input", json={"content": "again"})
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    error = error_of(response)
    assert error == {
        "code": "worker_busy",
        "message": error["message"],
        "details": {"run_id": run_id},
        "retryable": True,
    }
    gate.release.set()


async def test_enqueue_is_202_queued_and_one_more_than_max_queue_is_409_queue_full_with_retry_after(
    gate: Gate,
) -> None:
    async with serving(gate, limits=Limits(max_queue=1)) as (_, client):
        run_id = await busy_worker(client, gate)
        queued = await client.post("/v1/workers/w1/input", json={"content": "later", "on_busy": "enqueue"})
        assert queued.status_code == 202
        ack = queued.json()["ack"]
        assert (ack["queued"], ack["input_sequence"], ack["duplicate"]) == (True, None, False)
        worker = (await client.get("/v1/workers/w1")).json()["worker"]
        assert worker["queued_runs"] == [ack["run_id"]]
        run = (await client.get(f"/v1/workers/w1/runs/{ack['run_id']}")).json()["run"]
        assert (run["status"], run["input_sequence"]) == ("queued", None)
        full = await client.post("/v1/workers/w1/input", json={"content": "more", "on_busy": "enqueue"})
        assert full.status_code == 409 and full.headers["retry-after"] == "1"
        error = error_of(full)
        assert (error["code"], error["retryable"], error["details"]) == (
            "queue_full",
            True,
            {"max_queue": 1, "run_id": run_id},
        )
        gate.release.set()


async def test_interrupt_answers_once_the_new_run_has_started_and_a_bad_on_busy_is_422(
    client: httpx.AsyncClient, gate: Gate
) -> None:
    run_id = await busy_worker(client, gate)
    bad = await client.post("/v1/workers/w1/input", json={"content": "x", "on_busy": "later"})
    assert bad.status_code == 422 and error_of(bad)["code"] == "invalid_input"
    gate.reset()
    response = await client.post("/v1/workers/w1/input", json={"content": "now", "on_busy": "interrupt"})
    assert response.status_code == 202
    ack = response.json()["ack"]
    assert (ack["queued"], ack["input_sequence"]) == (False, 1)
    assert (await client.get(f"/v1/workers/w1/runs/{run_id}")).json()["run"]["status"] == "cancelled"
    gate.release.set()


async def test_input_to_a_stopped_worker_is_409_worker_stopped(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.post("/v1/workers/w1/stop")
    response = await client.post("/v1/workers/w1/input", json={"content": "hi"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "worker_stopped"
    assert "retry-after" not in response.headers


async def test_input_to_an_unknown_worker_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers/ghost/input", json={"content": "hi"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "worker_not_found"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "$"),
        ({"content": ""}, "$.content"),
        ({"content": 5}, "$.content"),
        ({"content": "hi", "kind": "assistant"}, "$.kind"),
        ({"content": "hi", "input_id": "bad id"}, "$.input_id"),
        ({"content": "hi", "input_id": "id\n"}, "$.input_id"),
        ({"content": "hi", "extra": 1}, "$"),
        (["content"], "$"),
    ],
)
async def test_bad_input_bodies_are_422_invalid_input_and_change_nothing(
    client: httpx.AsyncClient, body: object, path: str
) -> None:
    await create(client)
    response = await client.post("/v1/workers/w1/input", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert error["details"]["path"] == path
    assert (await client.get("/v1/workers/w1")).json()["worker"]["transcript_len"] == 0


async def test_content_over_max_input_bytes_is_422_invalid_input(gate: Gate) -> None:
    async with serving(gate, limits=Limits(max_input_bytes=8)) as (_, client):
        await create(client)
        response = await client.post("/v1/workers/w1/input", json={"content": "ééééé"})  # 10 bytes
        assert response.status_code == 422
        assert error_of(response)["code"] == "invalid_input"


async def test_get_an_unknown_run_is_404_run_not_found(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.get("/v1/workers/w1/runs/run-999")
    assert response.status_code == 404
    assert error_of(response)["code"] == "run_not_found"


@pytest.mark.parametrize("run_id", ["run-%C2%B2", "run-1%C2%B2", "run-%D9%A3", "run-01", "bad%20id", "r" * 129])
async def test_get_a_run_id_not_in_the_runtime_form_is_404_run_not_found(
    gate: Gate, tmp_path: Path, run_id: str
) -> None:
    async with (
        make_runtime(gate, store=FsRuntimeStore(tmp_path)) as rt,
        client_for(create_app(rt, token=TOKEN)) as client,
    ):
        await create(client)
        done = await client.post("/v1/workers/w1/input", json={"content": "hi"})
        await rt.wait_for_run("w1", done.json()["ack"]["run_id"])
        response = await client.get(f"/v1/workers/w1/runs/{run_id}")
        assert response.status_code == 404
        assert error_of(response)["code"] == "run_not_found"


async def test_get_an_active_run(client: httpx.AsyncClient, gate: Gate) -> None:
    run_id = await busy_worker(client, gate)
    response = await client.get(f"/v1/workers/w1/runs/{run_id}")
    assert response.json()["run"]["status"] == "running"
    gate.release.set()


# --- cancel and stop -----------------------------------------------------------------------------------------


async def test_cancel_ends_the_active_run_and_answers_idle(client: httpx.AsyncClient, gate: Gate) -> None:
    run_id = await busy_worker(client, gate)
    response = await client.post("/v1/workers/w1/cancel", json={"reason": "enough"})
    assert response.status_code == 200
    ack = response.json()["ack"]
    assert ack["status"] == "idle"
    assert ack["cancelled_run_id"] == run_id
    assert isinstance(ack["event_id"], int)
    run = (await client.get(f"/v1/workers/w1/runs/{run_id}")).json()["run"]
    assert run["status"] == "cancelled"
    assert (await client.post("/v1/workers/w1/input", json={"content": "next"})).status_code == 202


async def test_cancel_with_an_empty_body_and_no_run_is_a_no_op(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post("/v1/workers/w1/cancel")
    assert response.status_code == 200
    assert response.json()["ack"] == {
        "worker_ref": {"runtime_id": "rt-test", "worker_id": "w1"},
        "status": "idle",
        "cancelled_run_id": None,
        "event_id": None,
        "cancelled_run_ids": [],
    }


async def test_cancel_naming_another_run_leaves_the_active_one(client: httpx.AsyncClient, gate: Gate) -> None:
    run_id = await busy_worker(client, gate)
    response = await client.post("/v1/workers/w1/cancel", json={"run_id": "run-1"})
    assert response.json()["ack"]["cancelled_run_id"] is None
    assert (await client.get(f"/v1/workers/w1/runs/{run_id}")).json()["run"]["status"] == "running"
    gate.release.set()


async def test_a_bad_cancel_body_is_422_invalid_request(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post("/v1/workers/w1/cancel", json={"run_id": 7})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


@pytest.mark.parametrize("run_id", ["bad id", "", "../run-1"])
async def test_cancel_with_malformed_run_id_is_422(client: httpx.AsyncClient, gate: Gate, run_id: str) -> None:
    active = await busy_worker(client, gate)
    response = await client.post("/v1/workers/w1/cancel", json={"run_id": run_id})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("run_id: invalid id (")
    assert error["details"]["field"] == "run_id"
    assert (await client.get(f"/v1/workers/w1/runs/{active}")).json()["run"]["status"] == "running"
    gate.release.set()


async def test_stop_cancels_the_run_and_is_idempotent(client: httpx.AsyncClient, gate: Gate) -> None:
    run_id = await busy_worker(client, gate)
    first = await client.post("/v1/workers/w1/stop", json={"reason": "done"})
    assert first.status_code == 200
    assert first.json()["ack"]["status"] == "stopped"
    assert first.json()["ack"]["cancelled_run_id"] == run_id
    again = (await client.post("/v1/workers/w1/stop")).json()["ack"]
    assert again["status"] == "stopped"
    assert again["event_id"] is None


async def test_stop_and_cancel_of_an_unknown_worker_are_404(client: httpx.AsyncClient) -> None:
    for action in ("stop", "cancel"):
        response = await client.post(f"/v1/workers/ghost/{action}")
        assert response.status_code == 404
        assert error_of(response)["code"] == "worker_not_found"


# --- transcript ----------------------------------------------------------------------------------------------


async def test_transcript_pages(rt: Runtime, client: httpx.AsyncClient) -> None:
    await create(client)
    for text in ("one", "two"):
        ack = (await client.post("/v1/workers/w1/input", json={"content": text})).json()["ack"]
        await rt.wait_for_run("w1", ack["run_id"])
    page = (await client.get("/v1/workers/w1/transcript?start=1&limit=2")).json()["transcript"]
    assert page["start"] == 1
    assert page["limit"] == 2
    assert page["total_items"] == 4
    assert [(e["role"], e["content"]) for e in page["items"]] == [("assistant", "one"), ("user", "two")]
    assert page["next_start"] == 3


@pytest.mark.parametrize(
    ("query", "code"),
    [("limit=5000", "limit_too_large"), ("start=-1", "invalid_request"), ("start=x", "invalid_request")],
)
async def test_bad_transcript_queries_are_422(client: httpx.AsyncClient, query: str, code: str) -> None:
    await create(client)
    response = await client.get(f"/v1/workers/w1/transcript?{query}")
    assert response.status_code == 422
    assert error_of(response)["code"] == code


async def test_transcript_of_an_unknown_worker_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers/ghost/transcript")
    assert response.status_code == 404


async def test_transcript_of_one_run(rt: Runtime, client: httpx.AsyncClient) -> None:
    await create(client)
    run_ids = []
    for text in ("one", "two"):
        ack = (await client.post("/v1/workers/w1/input", json={"content": text})).json()["ack"]
        await rt.wait_for_run("w1", ack["run_id"])
        run_ids.append(ack["run_id"])
    page = (await client.get(f"/v1/workers/w1/transcript?run_id={run_ids[1]}&limit=1")).json()["transcript"]
    assert [(e["sequence"], e["content"], e["data"]) for e in page["items"]] == [(2, "two", None)]
    assert (page["start"], page["total_items"], page["next_start"]) == (0, 2, 3)
    rest = (await client.get(f"/v1/workers/w1/transcript?run_id={run_ids[1]}&start=3")).json()["transcript"]
    assert [e["content"] for e in rest["items"]] == ["two"] and rest["next_start"] is None
    unknown = await client.get("/v1/workers/w1/transcript?run_id=run-999")
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "run_not_found"
    bad = await client.get("/v1/workers/w1/transcript?run_id=bad%20id")
    assert bad.status_code == 422 and error_of(bad)["details"] == {"field": "run_id"}


# --- events --------------------------------------------------------------------------------------------------


async def test_events_page_and_filter(client: httpx.AsyncClient) -> None:
    await create(client, "w1")
    await create(client, "w2")
    page = (await client.get("/v1/events")).json()
    assert [e["kind"] for e in page["events"]] == ["runtime_started", "worker_created", "worker_created"]
    assert page["next_after"] == page["events"][-1]["id"]
    assert page["has_more"] is False
    only = (await client.get("/v1/events?worker_id=w2")).json()
    assert [e["worker_ref"]["worker_id"] for e in only["events"]] == ["w2"]
    limited = (await client.get("/v1/events?after=1&limit=1")).json()
    assert [e["id"] for e in limited["events"]] == [2]
    assert limited["has_more"] is True


async def test_an_empty_events_page_keeps_the_cursor(client: httpx.AsyncClient) -> None:
    newest = (await client.get("/v1/events")).json()["next_after"]
    page = (await client.get(f"/v1/events?after={newest}")).json()
    assert page == {"events": [], "next_after": newest, "has_more": False}


@pytest.mark.parametrize("wait", ["", "&wait=0.5"])
async def test_a_cursor_above_the_newest_event_is_422_with_newest_id(client: httpx.AsyncClient, wait: str) -> None:
    for n in range(40):
        await create(client, f"w{n}")
    newest = (await client.get("/v1/events?limit=1000")).json()["next_after"]
    response = await client.get(f"/v1/events?after=999999{wait}")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": "after", "newest_id": newest}


async def test_a_long_poll_answers_when_an_event_comes(client: httpx.AsyncClient) -> None:
    last = (await client.get("/v1/events")).json()["next_after"]
    answer: dict[str, object] = {}

    async def poll() -> None:
        response = await client.get(f"/v1/events?after={last}&wait=30")
        answer.update(response.json())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await create(client, "late")
    assert [e["kind"] for e in answer["events"]] == ["worker_created"]  # type: ignore[attr-defined]


async def test_a_long_poll_with_nothing_coming_answers_empty_after_wait(client: httpx.AsyncClient) -> None:
    last = (await client.get("/v1/events")).json()["next_after"]
    with anyio.fail_after(10):
        page = (await client.get(f"/v1/events?after={last}&wait=0.05")).json()
    assert page == {"events": [], "next_after": last, "has_more": False}


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("wait=31", "invalid_request"),
        ("wait=-1", "invalid_request"),
        ("wait=soon", "invalid_request"),
        ("after=-1", "invalid_request"),
        ("limit=1001", "limit_too_large"),
        ("worker_id=..", "invalid_request"),
    ],
)
async def test_bad_event_queries_are_422(client: httpx.AsyncClient, query: str, code: str) -> None:
    response = await client.get(f"/v1/events?{query}")
    assert response.status_code == 422
    assert error_of(response)["code"] == code


async def test_an_expired_cursor_is_410_with_the_oldest_id(gate: Gate) -> None:
    async with serving(gate, limits=Limits(event_retention=1)) as (_, client):
        for i in range(3):
            await create(client, f"w{i}")
        response = await client.get("/v1/events?after=0")
        assert response.status_code == 410
        error = error_of(response)
        assert error["code"] == "cursor_expired"
        assert isinstance(error["details"]["oldest_id"], int)


# --- diagnostics ---------------------------------------------------------------------------------------------


async def test_diagnostics_list_failed_runs(rt: Runtime, client: httpx.AsyncClient) -> None:
    await create(client, profile={"kind": "named", "name": "boom"})
    ack = (await client.post("/v1/workers/w1/input", json={"content": "x"})).json()["ack"]
    await rt.wait_for_run("w1", ack["run_id"])
    response = await client.get("/v1/diagnostics")
    assert response.status_code == 200
    diagnostics = response.json()["diagnostics"]
    assert [d["code"] for d in diagnostics] == ["engine_error"]
    assert set(diagnostics[0]) == {"level", "code", "message", "path", "offset", "worker_ref", "created_at"}


async def test_diagnostics_are_per_process_and_the_failures_stay_in_the_event_log(gate: Gate, tmp_path: Path) -> None:
    async with make_runtime(gate, store=FsRuntimeStore(tmp_path)) as rt, client_for(create_app(rt, token=TOKEN)) as c:
        await create(c, profile={"kind": "named", "name": "boom"})
        ack = (await c.post("/v1/workers/w1/input", json={"content": "x"})).json()["ack"]
        await rt.wait_for_run("w1", ack["run_id"])
        assert [d["code"] for d in (await c.get("/v1/diagnostics")).json()["diagnostics"]] == ["engine_error"]
    async with make_runtime(gate, store=FsRuntimeStore(tmp_path)) as rt, client_for(create_app(rt, token=TOKEN)) as c:
        assert (await c.get("/v1/diagnostics")).json()["diagnostics"] == []
        events = (await c.get("/v1/events?worker_id=w1")).json()["events"]
        assert [e["run_id"] for e in events if e["kind"] == "run_failed"] == [ack["run_id"]]
    [endpoint] = [e for e in routes_module.ENDPOINTS if e.operation_id == "getDiagnostics"]
    assert "since this process started" in endpoint.summary


async def test_a_failed_engine_and_a_failing_store_say_what_happened_without_internals(gate: Gate) -> None:
    store = RefusingStore()
    async with make_runtime(gate, store=store) as rt, client_for(create_app(rt, token=TOKEN)) as client:
        await create(client, profile={"kind": "named", "name": "boom"})
        ack = (await client.post("/v1/workers/w1/input", json={"content": "x"})).json()["ack"]
        await rt.wait_for_run("w1", ack["run_id"])
        run = (await client.get(f"/v1/workers/w1/runs/{ack['run_id']}")).json()["run"]
        assert run["error"] == {"code": "engine_error", "message": "the engine failed; see the Runtime's log"}
        store.refuse = True
        response = await client.post("/v1/workers", json={"worker_id": "w2"})
        store.refuse = False
    assert response.status_code == 503
    error = error_of(response)
    assert (error["code"], error["retryable"], error["details"]) == ("runtime_unavailable", True, {})
    assert "/srv" not in response.text and "boom" not in run["error"]["message"]


async def test_readyz_is_503_store_unavailable_while_the_store_cannot_write_and_says_when_the_outcome_is_unknown(
    gate: Gate,
) -> None:
    store = FaultyStore()
    async with make_runtime(gate, store=store) as rt, client_for(create_app(rt, token=TOKEN)) as client:
        await create(client)

        async def ready() -> tuple[int, object]:
            response = await client.get("/readyz")
            return response.status_code, response.json()

        assert await ready() == (200, {"status": "ok"})
        store.failing = True  # the disk is full: refused, nothing written
        response = await client.post("/v1/workers/w1/input", json={"content": "lost"})
        assert (response.status_code, error_of(response)["details"]) == (503, {})
        assert await ready() == (503, {"status": "store_unavailable"})
        store.failing = False  # space came back: ready again once a write succeeds
        assert await ready() == (503, {"status": "store_unavailable"})
        response = await client.post("/v1/workers/w1/input", json={"content": "kept"})
        assert response.status_code == 202
        await rt.wait_for_run("w1", response.json()["ack"]["run_id"])
        assert await ready() == (200, {"status": "ok"})
        store.fsync_fail_ids.add(store.committed_id + 1)  # the next write's fsync fails: its outcome is unknown
        for content in ("unknown", "later"):
            response = await client.post("/v1/workers/w1/input", json={"content": content, "input_id": "in-1"})
            error = error_of(response)
            assert (response.status_code, error["code"], error["retryable"]) == (503, "runtime_unavailable", True)
            assert error["details"] == {"outcome": "unknown"}
            assert await ready() == (503, {"status": "store_unavailable"})  # until a restart


# --- timeouts and damage -------------------------------------------------------------------------------------


class Stubborn:
    """An engine that ignores cancellation until released (a misbehaving plugin)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    def engine(self) -> type[Engine]:
        outer = self

        class StubbornEngine(Engine):
            name = "stubborn"

            async def run(self, ctx: RunContext) -> None:
                outer.started.set()
                with anyio.CancelScope(shield=True):
                    await outer.release.wait()

        return StubbornEngine


@pytest.mark.parametrize("action", ["cancel", "stop"])
async def test_a_cancel_or_stop_past_the_operation_timeout_is_504_and_completes_later(action: str) -> None:
    stubborn = Stubborn()
    runtime = Runtime(
        runtime_id="rt-test",
        limits=Limits(operation_timeout_s=0.05),
        profiles={"stubborn": ProfileConfig("stubborn")},
        engines={"stubborn": stubborn.engine()},
    )
    async with runtime as rt, client_for(create_app(rt, allow_unauthenticated=True), token=None) as client:
        await client.post("/v1/workers", json={"worker_id": "w1", "profile": {"kind": "named", "name": "stubborn"}})
        run_id = (await client.post("/v1/workers/w1/input", json={"content": "x"})).json()["ack"]["run_id"]
        await stubborn.started.wait()
        response = await client.post(f"/v1/workers/w1/{action}")
        assert response.status_code == 504
        error = error_of(response)
        assert (error["code"], error["retryable"]) == ("operation_timeout", True)
        stubborn.release.set()
        run = await rt.wait_for_run("w1", run_id)
        assert run.status == "cancelled"
        if action == "stop":  # the stop completes in the Runtime's own task once the run has ended
            after, kinds = 0, []
            with anyio.fail_after(5):
                while "worker_stopped" not in kinds:
                    page = (await client.get(f"/v1/events?worker_id=w1&after={after}&wait=5")).json()
                    kinds += [e["kind"] for e in page["events"]]
                    after = page["next_after"]
            assert (await client.get("/v1/workers/w1")).json()["worker"]["status"] == "stopped"


async def test_a_corrupt_worker_is_500_store_corrupt_with_path_and_offset(
    rt: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def corrupt(worker_id: str) -> object:
        raise StoreCorruptError("damaged", details={"path": "/store/w1/state", "offset": 12})

    monkeypatch.setattr(rt, "get_worker", corrupt)
    response = await client.get("/v1/workers/w1")
    assert response.status_code == 500
    assert error_of(response) == {
        "code": "store_corrupt",
        "message": "damaged",
        "details": {"path": "/store/w1/state", "offset": 12},
        "retryable": False,
    }


# --- requests for input --------------------------------------------------------------------------------------


async def waiting_run(client: httpx.AsyncClient, rt: Runtime, worker_id: str, content: str) -> tuple[str, str]:
    """A Worker of the `ask` engine with a run waiting for an answer: (run id, request id)."""
    await create(client, worker_id, profile={"kind": "builtin", "name": "ask"})
    response = await client.post(f"/v1/workers/{worker_id}/input", json={"content": content})
    run_id = str(response.json()["ack"]["run_id"])
    with anyio.fail_after(10):
        while True:
            signal = rt.event_signal()
            run = (await client.get(f"/v1/workers/{worker_id}/runs/{run_id}")).json()["run"]
            if run["status"] == "waiting":
                return run_id, str(run["pending_request"]["request_id"])
            await signal.wait()


async def test_respond_answers_a_waiting_run_and_a_repeat_gets_the_first_ack(
    client: httpx.AsyncClient, rt: Runtime
) -> None:
    run_id, request_id = await waiting_run(client, rt, "w1", "ship it")
    listed = (await client.get("/v1/requests")).json()
    assert listed["next_after"] is None
    assert [(r["worker_ref"]["worker_id"], r["run_id"], r["request"]["prompt"]) for r in listed["requests"]] == [
        ("w1", run_id, "ship it")
    ]
    body = {"request_id": request_id, "approved": True, "content": "fine", "response_id": "resp-1"}
    response = await client.post(f"/v1/workers/w1/runs/{run_id}/respond", json=body)
    assert response.status_code == 200, response.text
    ack = response.json()["ack"]
    assert (ack["run_id"], ack["request_id"], ack["status"], ack["duplicate"]) == (run_id, request_id, "running", False)
    assert ack["worker_ref"]["worker_id"] == "w1"
    again = await client.post(f"/v1/workers/w1/runs/{run_id}/respond", json=body)
    assert again.status_code == 200 and again.json()["ack"] == {**ack, "duplicate": True}
    conflict = await client.post(f"/v1/workers/w1/runs/{run_id}/respond", json={**body, "approved": False})
    assert (conflict.status_code, error_of(conflict)["code"]) == (409, "idempotency_conflict")
    closed = await client.post(f"/v1/workers/w1/runs/{run_id}/respond", json={**body, "response_id": "resp-2"})
    assert (closed.status_code, error_of(closed)["code"]) == (409, "request_closed")
    assert (await client.get("/v1/requests")).json() == {"requests": [], "next_after": None}


async def test_respond_refuses_bad_answers_and_unknown_requests(client: httpx.AsyncClient, rt: Runtime) -> None:
    run_id, request_id = await waiting_run(client, rt, "w1", "ship it")
    url = f"/v1/workers/w1/runs/{run_id}/respond"
    cases = [
        ({"request_id": request_id}, 422, "invalid_request"),  # an approval needs `approved`
        ({"request_id": request_id, "content": "yes"}, 422, "invalid_request"),
        ({"request_id": request_id, "approved": "yes"}, 422, "invalid_request"),
        ({"request_id": "bad id", "approved": True}, 422, "invalid_request"),
        ({"request_id": request_id, "approved": True, "response_id": "a b"}, 422, "invalid_request"),
        ({"request_id": request_id, "approved": True, "extra": 1}, 422, "invalid_request"),
        ({"approved": True}, 422, "invalid_request"),
        ({"request_id": "req-1", "approved": True}, 404, "request_not_found"),
    ]
    for body, status, code in cases:
        response = await client.post(url, json=body)
        assert (response.status_code, error_of(response)["code"]) == (status, code), body
    missing = await client.post("/v1/workers/w1/runs/run-999/respond", json={"request_id": request_id})
    assert (missing.status_code, error_of(missing)["code"]) == (404, "run_not_found")
    bad_worker = await client.post(f"/v1/workers/bad%20id/runs/{run_id}/respond", json={"request_id": request_id})
    assert (bad_worker.status_code, error_of(bad_worker)["code"]) == (400, "invalid_worker_id")
    run = (await client.get(f"/v1/workers/w1/runs/{run_id}")).json()["run"]
    assert run["status"] == "waiting" and run["pending_request"]["request_id"] == request_id


async def test_list_requests_pages_and_checks_its_query(client: httpx.AsyncClient, rt: Runtime) -> None:
    first = await waiting_run(client, rt, "w1", "one")
    second = await waiting_run(client, rt, "w2", "two")
    page = (await client.get("/v1/requests", params={"limit": 1})).json()
    assert [r["run_id"] for r in page["requests"]] == [first[0]] and page["next_after"] is not None
    rest = (await client.get("/v1/requests", params={"after": page["next_after"]})).json()
    assert [r["run_id"] for r in rest["requests"]] == [second[0]] and rest["next_after"] is None
    for query, code in (
        ({"after": "-1"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"x": "1"}, "invalid_request"),
    ):
        response = await client.get("/v1/requests", params=query)
        assert (response.status_code, error_of(response)["code"]) == (422, code), query
