"""Cancel and stop: exactly one terminal state, answers after the run has ended, no leaks into the next run."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from core_helpers import Gate, gated_worker

from worker_runtime_core import InvalidRequestError, InvalidWorkerIdError, Runtime
from worker_runtime_core.ids import invalid_id_message


async def test_cancel_aborts_the_active_run_and_leaves_the_worker_idle(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "work")
    await gate.started.wait()
    cancel = await rt.cancel_worker(wid, reason="changed my mind")
    assert cancel.status == "idle" and cancel.cancelled_run_id == ack.run_id
    run = await rt.get_run(wid, ack.run_id)
    assert run.status == "cancelled" and run.ended_at is not None
    assert gate.cancelled == 1
    events = (await rt.read_events(worker_id=wid)).events
    assert [e.kind for e in events].count("run_cancelled") == 1
    assert events[-1].id == cancel.event_id and events[-1].data["reason"] == "changed my mind"
    assert events[-1].data["run"]["status"] == "cancelled"
    # the next input is accepted at once, and nothing of the cancelled run leaks into it
    gate.reset()
    nxt = await rt.send_input(wid, "next")
    gate.release.set()
    assert (await rt.wait_for_run(wid, nxt.run_id)).status == "completed"
    items = (await rt.transcript(wid)).items
    assert [(e.content, e.run_id) for e in items] == [
        ("work", ack.run_id),
        ("next", nxt.run_id),
        ("released next", nxt.run_id),
    ]


async def test_cancel_before_the_run_started_still_ends_it_cancelled(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "work")
    cancel = await rt.cancel_worker(wid)  # the run task has not run yet
    assert cancel.cancelled_run_id == ack.run_id
    assert (await rt.get_run(wid, ack.run_id)).status == "cancelled"
    assert gate.runs == 0


async def test_cancel_with_nothing_running_is_a_no_op(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    last = (await rt.read_events()).next_after
    ack = await rt.cancel_worker("w")
    assert (ack.status, ack.cancelled_run_id, ack.event_id) == ("idle", None, None)
    assert (await rt.read_events(after=last)).events == []


async def test_a_late_cancel_naming_an_old_run_never_kills_the_new_one(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    old = await rt.send_input(wid, "old")
    gate.release.set()
    await rt.wait_for_run(wid, old.run_id)
    gate.reset()
    new = await rt.send_input(wid, "new")
    await gate.started.wait()
    late = await rt.cancel_worker(wid, run_id=old.run_id)
    assert (late.status, late.cancelled_run_id, late.event_id) == ("busy", None, None)
    assert (await rt.get_worker(wid)).active_run is not None
    gate.release.set()
    assert (await rt.wait_for_run(wid, new.run_id)).status == "completed"


async def test_cancel_naming_the_active_run_cancels_it(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "x")
    await gate.started.wait()
    assert (await rt.cancel_worker(wid, run_id=ack.run_id)).cancelled_run_id == ack.run_id


async def test_concurrent_cancels_end_the_run_once(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "x")
    await gate.started.wait()
    acks = []

    async def cancel() -> None:
        acks.append(await rt.cancel_worker(wid))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(cancel)
    assert {a.cancelled_run_id for a in acks} == {ack.run_id}
    kinds = [e.kind for e in (await rt.read_events(worker_id=wid)).events]
    assert kinds.count("run_cancelled") == 1 and gate.cancelled == 1


async def test_stop_during_a_run_cancels_it_and_stops_the_worker(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "x")
    await gate.started.wait()
    stop = await rt.stop_worker(wid, reason="done here")
    assert stop.status == "stopped" and stop.cancelled_run_id == ack.run_id
    assert (await rt.get_run(wid, ack.run_id)).status == "cancelled"
    events = (await rt.read_events(worker_id=wid)).events
    assert [e.kind for e in events][-2:] == ["run_cancelled", "worker_stopped"]
    assert events[-1].id == stop.event_id
    assert events[-1].data == {"reason": "done here", "cancelled_run_id": ack.run_id}
    worker = await rt.get_worker(wid)
    assert worker.status == "stopped" and worker.active_run is None


async def test_stop_is_idempotent_and_cancel_on_stopped_is_a_no_op(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    first = await rt.stop_worker("w")
    assert first.event_id is not None and first.cancelled_run_id is None
    again = await rt.stop_worker("w")
    assert (again.status, again.cancelled_run_id, again.event_id) == ("stopped", None, None)
    cancel = await rt.cancel_worker("w")
    assert (cancel.status, cancel.cancelled_run_id, cancel.event_id) == ("stopped", None, None)
    kinds = [e.kind for e in (await rt.read_events(worker_id="w")).events]
    assert kinds.count("worker_stopped") == 1


async def test_input_while_a_stop_is_under_way_is_refused(rt: Runtime, gate: Gate) -> None:
    from worker_runtime_core import WorkerStoppedError

    wid = await gated_worker(rt)
    await rt.send_input(wid, "x")
    await gate.started.wait()
    refused: list[Exception] = []

    async def stop_then_observe() -> None:
        await rt.stop_worker(wid)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_then_observe)
        await anyio.wait_all_tasks_blocked()
        try:
            await rt.send_input(wid, "sneak in")
        except WorkerStoppedError as exc:
            refused.append(exc)
    assert len(refused) == 1
    assert (await rt.get_worker(wid)).transcript_len == 1


async def test_close_interrupts_active_runs_once(gate: Gate) -> None:
    from worker_runtime_core import ProfileConfig

    rt = Runtime(profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()})
    async with rt:
        wid = await gated_worker(rt)
        ack = await rt.send_input(wid, "x")
        await gate.started.wait()
        store = rt._store
    assert rt.status == "closed"
    events = await store.read_events(0, 100)
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["runtime_stopping", "run_interrupted"]
    assert kinds.count("run_interrupted") == 1
    run = await store.read_run(wid, ack.run_id)
    assert run is not None and run.status == "interrupted"


async def test_close_gives_active_runs_the_grace_period(gate: Gate) -> None:
    from worker_runtime_core import ProfileConfig

    rt = Runtime(profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()})
    await rt.start()
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "x")
    await gate.started.wait()
    gate.release.set()  # the run can finish within the grace period
    await rt.close(grace_s=30)
    run = await rt._store.read_run(wid, ack.run_id)
    assert run is not None and run.status == "completed"


@pytest.mark.parametrize("run_id", ["bad id", "", "run-1\n", "-run", "r" * 129, 7])
async def test_cancel_with_a_malformed_run_id_is_invalid_request_and_leaves_the_run(
    rt: Runtime, gate: Gate, run_id: Any
) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "work")
    await gate.started.wait()
    with pytest.raises(InvalidRequestError) as info:
        await rt.cancel_worker(wid, run_id=run_id)
    assert (info.value.code, info.value.message) == ("invalid_request", invalid_id_message("run_id"))
    assert info.value.details == {"field": "run_id"}
    assert (await rt.get_run(wid, ack.run_id)).status == "running"
    gate.release.set()
    assert (await rt.wait_for_run(wid, ack.run_id)).status == "completed"


async def test_cancel_with_a_well_formed_run_id_that_names_no_run_is_a_no_op(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "work")
    await gate.started.wait()
    for other in ("run-999", "run-abc", "anything.else"):
        cancel = await rt.cancel_worker(wid, run_id=other)
        assert (cancel.status, cancel.cancelled_run_id, cancel.event_id) == ("busy", None, None)
    gate.release.set()
    assert (await rt.wait_for_run(wid, ack.run_id)).status == "completed"


async def test_cancel_with_a_bad_worker_id_and_a_bad_run_id_reports_the_worker_id(rt: Runtime) -> None:
    with pytest.raises(InvalidWorkerIdError):
        await rt.cancel_worker("bad id", run_id="bad id")
