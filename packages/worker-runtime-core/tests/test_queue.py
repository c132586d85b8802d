"""Busy strategies: input queued behind the active run (``on_busy="enqueue"``), the queue's order, its limit, cancel
and stop of queued runs, and ``on_busy="interrupt"``; with a store whose writes never suspend and one whose do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from core_helpers import Gate, gated_worker
from store_faults import FaultyStore

from worker_runtime_core import (
    InvalidInputError,
    Limits,
    ProfileConfig,
    QueueFullError,
    Runtime,
    RuntimeUnavailableError,
    WorkerBusyError,
)


@pytest.fixture(params=["memory", "suspending"])
async def qrt(request: pytest.FixtureRequest, gate: Gate) -> AsyncIterator[Runtime]:
    store = FaultyStore() if request.param == "suspending" else None
    async with Runtime(
        runtime_id="rt-test",
        store=store,
        limits=Limits(max_queue=3),
        profiles={"gate": ProfileConfig("gate")},
        engines={"gate": gate.engine()},
    ) as runtime:
        yield runtime


async def _release(gate: Gate) -> None:
    """Let the run at the gate answer, and arm the gate for the next one."""
    release = gate.release
    gate.reset()
    release.set()


async def _busy(rt: Runtime, gate: Gate) -> tuple[str, str]:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "first")
    await gate.started.wait()
    return wid, ack.run_id


async def test_an_enqueued_input_is_acked_queued_with_no_sequence_and_its_content_only_in_the_log(
    qrt: Runtime, gate: Gate
) -> None:
    wid, active = await _busy(qrt, gate)
    ack = await qrt.send_input(wid, "second", input_id="in-2", on_busy="enqueue")
    assert (ack.queued, ack.input_sequence, ack.duplicate) == (True, None, False)
    run = await qrt.get_run(wid, ack.run_id)
    assert (run.status, run.input_sequence) == ("queued", None)
    worker = await qrt.get_worker(wid)
    assert worker.status == "busy" and worker.queued_runs == [ack.run_id] and worker.transcript_len == 1
    assert worker.active_run is not None and worker.active_run.run_id == active
    event = (await qrt.read_events(ack.event_id - 1, 1)).events[0]
    assert (event.kind, event.run_id) == ("input_accepted", ack.run_id)
    assert event.data == {"input_sequence": None, "input_id": "in-2", "kind": "user", "queued": True}
    (frame,) = (await qrt.read_stream(ack.event_id - 1, 1)).events
    assert frame.entry is None


async def test_queued_runs_start_in_acceptance_order_each_logging_run_started_with_its_entry(
    qrt: Runtime, gate: Gate
) -> None:
    wid, first = await _busy(qrt, gate)
    acks = [await qrt.send_input(wid, f"q{n}", input_id=f"in-{n}", on_busy="enqueue") for n in range(3)]
    for _ in range(4):
        await gate.started.wait()
        await _release(gate)
    for ack in acks:
        assert (await qrt.wait_for_run(wid, ack.run_id)).status == "completed"
    page = await qrt.transcript(wid)
    assert [(e.role, e.content) for e in page.items] == [
        ("user", "first"),
        ("assistant", "released first"),
        *[pair for n in range(3) for pair in (("user", f"q{n}"), ("assistant", f"released q{n}"))],
    ]
    started = [e for e in (await qrt.read_events(0, 100)).events if e.kind == "run_started"]
    assert [e.run_id for e in started] == [a.run_id for a in acks]
    assert [e.data for e in started] == [
        {"input_sequence": 2 + 2 * n, "input_id": f"in-{n}", "kind": "user"} for n in range(3)
    ]
    entries = {e.run_id: e for e in page.items if e.role == "user"}
    assert [entries[a.run_id].event_id for a in acks] == [e.id for e in started]
    runs = [await qrt.get_run(wid, a.run_id) for a in acks]
    assert [r.input_sequence for r in runs] == [2, 4, 6]
    frames = (await qrt.read_stream(started[0].id - 1, 1)).events
    assert frames[0].entry is not None and frames[0].entry.content == "q0"
    assert (await qrt.get_worker(wid)).status == "idle" and (await qrt.get_worker(wid)).queued_runs == []


async def test_enqueue_to_an_idle_worker_starts_at_once_like_reject(qrt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(qrt)
    ack = await qrt.send_input(wid, "hi", on_busy="enqueue")
    assert (ack.queued, ack.input_sequence) == (False, 0)
    await gate.started.wait()
    assert (await qrt.get_run(wid, ack.run_id)).status == "running"


async def test_one_more_than_max_queue_is_queue_full_and_changes_nothing(qrt: Runtime, gate: Gate) -> None:
    wid, active = await _busy(qrt, gate)
    for n in range(3):
        await qrt.send_input(wid, f"q{n}", on_busy="enqueue")
    before = await qrt.get_worker(wid)
    with pytest.raises(QueueFullError) as info:
        await qrt.send_input(wid, "one more", input_id="in-x", on_busy="enqueue")
    assert info.value.retryable and info.value.code == "queue_full"
    assert info.value.details == {"max_queue": 3, "run_id": active}
    assert await qrt.get_worker(wid) == before and qrt.newest_event_id == before.last_event_id
    with pytest.raises(WorkerBusyError):  # the default, reject, is unchanged
        await qrt.send_input(wid, "rejected")
    # the key was not kept: after a run has started, the same input_id is accepted
    await _release(gate)
    await gate.started.wait()
    ack = await qrt.send_input(wid, "one more", input_id="in-x", on_busy="enqueue")
    assert ack.queued and not ack.duplicate


async def test_a_repeated_input_id_returns_the_first_queued_ack_whatever_its_on_busy(qrt: Runtime, gate: Gate) -> None:
    wid, _ = await _busy(qrt, gate)
    first = await qrt.send_input(wid, "again", input_id="in-1", on_busy="enqueue")
    for on_busy in ("reject", "enqueue", "interrupt"):
        repeat = await qrt.send_input(wid, "again", input_id="in-1", on_busy=on_busy)
        assert repeat.duplicate and (repeat.run_id, repeat.queued, repeat.input_sequence) == (
            first.run_id,
            True,
            None,
        )
    assert (await qrt.get_worker(wid)).queued_runs == [first.run_id]
    assert gate.cancelled == 0


async def test_a_bad_on_busy_is_invalid_input_and_changes_nothing(qrt: Runtime, gate: Gate) -> None:
    wid, _ = await _busy(qrt, gate)
    before = await qrt.get_worker(wid)
    for bad in ("queue", "", None, 1):
        with pytest.raises(InvalidInputError) as info:
            await qrt.send_input(wid, "x", on_busy=bad)  # type: ignore[arg-type]
        assert info.value.details == {"field": "on_busy"}
    assert await qrt.get_worker(wid) == before


async def test_cancel_of_a_queued_run_ends_only_it_and_it_never_starts(qrt: Runtime, gate: Gate) -> None:
    wid, active = await _busy(qrt, gate)
    q1 = await qrt.send_input(wid, "q1", on_busy="enqueue")
    q2 = await qrt.send_input(wid, "q2", on_busy="enqueue")
    ack = await qrt.cancel_worker(wid, run_id=q1.run_id, reason="changed my mind")
    assert (ack.status, ack.cancelled_run_id) == ("busy", q1.run_id) and ack.event_id is not None
    run = await qrt.get_run(wid, q1.run_id)
    assert (run.status, run.input_sequence) == ("cancelled", None)
    assert (await qrt.wait_for_run(wid, q1.run_id)).status == "cancelled"
    worker = await qrt.get_worker(wid)
    assert worker.queued_runs == [q2.run_id] and worker.active_run is not None
    assert worker.active_run.run_id == active and gate.cancelled == 0
    event = (await qrt.read_events(ack.event_id - 1, 1)).events[0]
    assert event.kind == "run_cancelled" and event.data["reason"] == "changed my mind"
    again = await qrt.cancel_worker(wid, run_id=q1.run_id)  # ended already: nothing to do
    assert (again.cancelled_run_id, again.event_id) == (None, None)
    await _release(gate)
    await gate.started.wait()
    await _release(gate)
    assert (await qrt.wait_for_run(wid, q2.run_id)).status == "completed"
    assert [e.content for e in (await qrt.transcript(wid)).items if e.role == "user"] == ["first", "q2"]


async def test_cancel_without_run_id_ends_the_active_run_and_the_next_queued_one_starts(
    qrt: Runtime, gate: Gate
) -> None:
    wid, active = await _busy(qrt, gate)
    gate.reset()
    q1 = await qrt.send_input(wid, "q1", on_busy="enqueue")
    ack = await qrt.cancel_worker(wid)
    assert (ack.status, ack.cancelled_run_id) == ("busy", active)
    await gate.started.wait()
    worker = await qrt.get_worker(wid)
    assert worker.active_run is not None and worker.active_run.run_id == q1.run_id and worker.queued_runs == []
    assert (await qrt.get_run(wid, active)).status == "cancelled"


async def test_stop_cancels_the_active_run_and_every_queued_one(qrt: Runtime, gate: Gate) -> None:
    wid, active = await _busy(qrt, gate)
    queued = [(await qrt.send_input(wid, f"q{n}", on_busy="enqueue")).run_id for n in range(2)]
    ack = await qrt.stop_worker(wid, reason="done")
    assert (ack.status, ack.cancelled_run_id, ack.cancelled_run_ids) == ("stopped", active, [active, *queued])
    for run_id in (active, *queued):
        assert (await qrt.get_run(wid, run_id)).status == "cancelled"
    worker = await qrt.get_worker(wid)
    assert worker.queued_runs == [] and worker.status == "stopped" and gate.runs == 1
    kinds = [e.kind for e in (await qrt.read_events(0, 100, worker_id=wid)).events]
    assert kinds[-4:] == ["run_cancelled", "run_cancelled", "run_cancelled", "worker_stopped"]


async def test_interrupt_cancels_the_active_run_and_starts_at_once_ahead_of_the_queue(qrt: Runtime, gate: Gate) -> None:
    wid, active = await _busy(qrt, gate)
    queued = await qrt.send_input(wid, "queued", on_busy="enqueue")
    gate.reset()
    ack = await qrt.send_input(wid, "now", on_busy="interrupt")
    assert (ack.queued, ack.input_sequence, ack.duplicate) == (False, 1, False)
    cancelled = await qrt.get_run(wid, active)
    assert cancelled.status == "cancelled"
    events = (await qrt.read_events(0, 100, worker_id=wid)).events
    ended = next(e for e in events if e.kind == "run_cancelled")
    assert ended.data["reason"] == "interrupted_by_input"
    worker = await qrt.get_worker(wid)
    assert worker.active_run is not None and worker.active_run.run_id == ack.run_id
    assert worker.queued_runs == [queued.run_id]
    await gate.started.wait()
    await _release(gate)
    await gate.started.wait()
    await _release(gate)
    assert (await qrt.wait_for_run(wid, queued.run_id)).status == "completed"
    assert [e.content for e in (await qrt.transcript(wid)).items if e.role == "user"] == ["first", "now", "queued"]


async def test_interrupt_with_nothing_queued_and_interrupt_of_an_idle_worker(qrt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(qrt)
    ack = await qrt.send_input(wid, "one", on_busy="interrupt")  # idle: it just starts
    assert (ack.queued, ack.input_sequence) == (False, 0)
    await gate.started.wait()
    gate.reset()
    second = await qrt.send_input(wid, "two", on_busy="interrupt")
    assert (second.input_sequence, (await qrt.get_run(wid, ack.run_id)).status) == (1, "cancelled")
    await gate.started.wait()
    assert (await qrt.get_worker(wid)).active_run.run_id == second.run_id  # type: ignore[union-attr]


async def test_interrupt_never_counts_toward_max_queue(qrt: Runtime, gate: Gate) -> None:
    wid, _ = await _busy(qrt, gate)
    for n in range(3):
        await qrt.send_input(wid, f"q{n}", on_busy="enqueue")
    gate.reset()
    ack = await qrt.send_input(wid, "now", on_busy="interrupt")
    assert not ack.queued and len((await qrt.get_worker(wid)).queued_runs) == 3


async def test_a_wait_for_a_queued_run_follows_it_to_its_end(qrt: Runtime, gate: Gate) -> None:
    wid, _ = await _busy(qrt, gate)
    queued = await qrt.send_input(wid, "later", on_busy="enqueue")
    results: list[str] = []

    async def wait() -> None:
        results.append((await qrt.wait_for_run(wid, queued.run_id)).status)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await _release(gate)
        await gate.started.wait()
        assert results == []
        await _release(gate)
    assert results == ["completed"]


async def test_a_run_s_write_in_flight_never_drops_an_input_queued_meanwhile(gate: Gate) -> None:
    store = FaultyStore()
    async with Runtime(profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()}, store=store) as rt:
        wid, _ = await _busy(rt, gate)
        store.hold = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: rt.send_input(wid, "queued", on_busy="enqueue"))
            await store.wait_held(1)  # the enqueue is in flight
            await _release(gate)  # the run emits its answer: staged only after the enqueue is committed
            store.release_all()
            await store.wait_held(1)
            later = store.release_all()
            store.hold = False
        staged = later[0].batch.worker
        assert staged is not None and [q.kind for q in staged.queued] == ["user"]


async def test_max_queue_defaults_to_100_in_the_summary_and_zero_refuses_every_queued_input(gate: Gate) -> None:
    assert Limits().max_queue == 100
    async with Runtime(
        limits=Limits(max_queue=0), profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()}
    ) as rt:
        assert (await rt.summary()).limits.max_queue == 0
        wid, _ = await _busy(rt, gate)
        with pytest.raises(QueueFullError):
            await rt.send_input(wid, "no room", on_busy="enqueue")
        gate.release.set()


# --- a stop refused midway ---------------------------------------------------------------------------------------


def _failing_rt(store: FaultyStore, gate: Gate) -> Runtime:
    return Runtime(store=store, profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()})


async def test_a_stop_refused_at_a_queued_run_s_end_keeps_the_rest_queued_and_they_start_in_turn(gate: Gate) -> None:
    store = FaultyStore()
    async with _failing_rt(store, gate) as rt:
        wid, active = await _busy(rt, gate)
        q1 = await rt.send_input(wid, "q1", on_busy="enqueue")
        q2 = await rt.send_input(wid, "q2", on_busy="enqueue")
        q3 = await rt.send_input(wid, "q3", on_busy="enqueue")
        last = (await rt.get_worker(wid)).last_event_id
        store.fail_ids = {last + 3}  # the stop writes the active run's end, q1's, then q2's: refused
        gate.reset()
        with pytest.raises(RuntimeUnavailableError):
            await rt.stop_worker(wid)
        assert [(await rt.get_run(wid, r)).status for r in (active, q1.run_id)] == ["cancelled", "cancelled"]
        with anyio.fail_after(30):  # a guard only: a Worker left idle with runs queued would wait here forever
            await gate.started.wait()  # q2, which the stop did not end, starts: the Worker is not left idle
        worker = await rt.get_worker(wid)
        assert worker.status == "busy" and worker.active_run is not None
        assert (worker.active_run.run_id, worker.queued_runs) == (q2.run_id, [q3.run_id])
        await _release(gate)
        assert (await rt.wait_for_run(wid, q2.run_id)).status == "completed"
        await gate.started.wait()  # q3 is at the gate
        await _release(gate)
        assert (await rt.wait_for_run(wid, q3.run_id)).status == "completed"
        assert (await rt.get_worker(wid)).status == "idle"
        ack = await rt.stop_worker(wid)  # a stop tried again stops it
        assert (ack.status, ack.cancelled_run_ids) == ("stopped", [])


async def test_a_stop_refused_at_worker_stopped_leaves_an_idle_worker_with_nothing_queued(gate: Gate) -> None:
    store = FaultyStore()
    async with _failing_rt(store, gate) as rt:
        wid, active = await _busy(rt, gate)
        queued = [(await rt.send_input(wid, f"q{n}", on_busy="enqueue")).run_id for n in range(2)]
        last = (await rt.get_worker(wid)).last_event_id
        store.fail_ids = {last + 4}  # after the three run ends: worker_stopped is refused
        with pytest.raises(RuntimeUnavailableError):
            await rt.stop_worker(wid)
        worker = await rt.get_worker(wid)
        assert (worker.status, worker.queued_runs, worker.active_run) == ("idle", [], None)
        assert [(await rt.get_run(wid, r)).status for r in (active, *queued)] == ["cancelled"] * 3
        gate.reset()
        ack = await rt.send_input(wid, "after")  # idle indeed: a plain input runs
        await gate.started.wait()
        await _release(gate)
        assert (await rt.wait_for_run(wid, ack.run_id)).status == "completed"
