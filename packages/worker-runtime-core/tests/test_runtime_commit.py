"""Commit, then show: with writes held and failed one at a time, nothing is visible before it is durable, a failed
write changes nothing and answers everybody waiting on it, and no event id is handed out twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from core_helpers import Gate
from store_faults import FaultyStore

from worker_runtime_core import (
    ProfileConfig,
    RunNotFoundError,
    Runtime,
    RuntimeUnavailableError,
    WorkerNotFoundError,
)

BOUND = 5  # seconds: a call that has not answered by then is hanging (no test waits this long when it passes)


@pytest.fixture
def store() -> FaultyStore:
    return FaultyStore()


@pytest.fixture
async def rt(store: FaultyStore, gate: Gate) -> AsyncIterator[Runtime]:
    profiles = {"gate": ProfileConfig("gate")}
    async with Runtime(runtime_id="rt-c", profiles=profiles, engines={"gate": gate.engine()}, store=store) as runtime:
        yield runtime
        store.hold = store.hold_returns = store.failing = False
        store.release_all()
        for write in store.returning:
            write.resume.set()
        gate.release.set()


class Outcome:
    """What one call in a background task returned or raised."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = anyio.Event()


def spawn(tg: anyio.abc.TaskGroup, call: Callable[[], Awaitable[Any]]) -> Outcome:
    outcome = Outcome()

    async def runner() -> None:
        try:
            outcome.value = await call()
        except Exception as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    tg.start_soon(runner)
    return outcome


async def _kinds(rt: Runtime, wid: str) -> list[str]:
    return [e.kind for e in (await rt.read_events(worker_id=wid)).events]


async def test_a_failed_input_write_answers_the_stop_cancel_and_wait_that_waited_for_it(
    rt: Runtime, store: FaultyStore
) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    store.hold = True
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            sent = spawn(tg, lambda: rt.send_input("w", "lost"))
            await store.wait_held(1)
            [write] = store.held
            run_id = f"run-{write.batch.event.id}"
            waited = spawn(tg, lambda: rt.wait_for_run("w", run_id))
            cancelled = spawn(tg, lambda: rt.cancel_worker("w"))
            stopped = spawn(tg, lambda: rt.stop_worker("w"))
            await anyio.wait_all_tasks_blocked()
            store.hold = False
            store.fail_ids.add(write.batch.event.id)
            store.release_all()
    assert isinstance(sent.error, RuntimeUnavailableError)
    assert isinstance(waited.error, RunNotFoundError)
    assert cancelled.error is None and cancelled.value.cancelled_run_id is None
    assert stopped.error is None and stopped.value.status == "stopped" and stopped.value.cancelled_run_id is None
    assert await _kinds(rt, "w") == ["worker_created", "worker_stopped"]


async def test_after_a_failed_write_the_next_id_follows_the_highest_written_one(
    rt: Runtime, store: FaultyStore
) -> None:
    for wid in ("a", "b"):
        await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": "gate"})
    store.hold_returns = True  # both inputs are written, then their callers resume newest first
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            first = spawn(tg, lambda: rt.send_input("a", "one"))
            await store.wait_returning(1)
            second = spawn(tg, lambda: rt.send_input("b", "two"))
            await store.wait_returning(2)
            older, newer = store.returning
            store.hold_returns = False
            newer.resume.set()
            await second.done.wait()
            older.resume.set()
    assert first.value.event_id < second.value.event_id
    store.failing = True
    with pytest.raises(RuntimeUnavailableError):
        await rt.create_worker(worker_id="c")
    store.failing = False
    created = await rt.create_worker(worker_id="c")
    assert created.last_event_id == second.value.event_id + 1
    ids = [e.id for e in (await rt.read_events()).events]
    assert ids == list(range(1, len(ids) + 1))


async def test_a_run_whose_terminal_event_cannot_be_written_stays_running_until_it_is(
    rt: Runtime, store: FaultyStore, gate: Gate
) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    ack = await rt.send_input("w", "work")
    await gate.started.wait()
    store.failing = True  # the run's output and its end cannot be written
    gate.release.set()
    await anyio.wait_all_tasks_blocked()
    assert store.refused  # the run tried
    detail = await rt.get_worker("w")
    assert detail.status == "busy" and detail.active_run is not None and detail.active_run.status == "running"
    assert (await rt.get_run("w", ack.run_id)).status == "running"
    assert [k for k in await _kinds(rt, "w") if k.startswith("run_")] == []
    store.failing = False
    await rt.create_worker(worker_id="other")  # the store writes again: the terminal event is retried
    with anyio.fail_after(BOUND):
        run = await rt.wait_for_run("w", ack.run_id)
    assert run.status == "failed"  # its output could not be written
    kinds = await _kinds(rt, "w")
    assert [k for k in kinds if k.startswith("run_")] == ["run_failed"]
    assert (await rt.get_worker("w")).status == "idle"
    assert (await rt.get_run("w", ack.run_id)).status == "failed"


async def test_two_concurrent_deletes_one_wins_the_other_finds_no_worker(rt: Runtime, store: FaultyStore) -> None:
    await rt.create_worker(worker_id="w")
    await rt.stop_worker("w")
    store.hold = True
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            one = spawn(tg, lambda: rt.delete_worker("w"))
            two = spawn(tg, lambda: rt.delete_worker("w"))
            await store.wait_held(1)
            await anyio.wait_all_tasks_blocked()
            store.hold = False
            store.release_all()
    outcomes = sorted([one, two], key=lambda o: o.error is not None)
    assert outcomes[0].error is None and outcomes[0].value.status == "deleted"
    assert isinstance(outcomes[1].error, WorkerNotFoundError)
    assert (await _kinds(rt, "w")).count("worker_deleted") == 1
    counts = (await rt.summary()).workers
    assert (counts.idle, counts.busy, counts.stopped, counts.total) == (0, 0, 0, 0)


async def test_an_input_in_flight_is_not_visible_and_a_failed_one_never_was(rt: Runtime, store: FaultyStore) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    before = await rt.get_worker("w")
    newest = (await rt.read_events()).next_after
    store.hold = True
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            sent = spawn(tg, lambda: rt.send_input("w", "lost"))
            await store.wait_held(1)
            [write] = store.held
            during = await rt.get_worker("w")
            page = await rt.transcript("w")
            listed = (await rt.list_workers()).workers
            counts = (await rt.summary()).workers
            with pytest.raises(RunNotFoundError):
                await rt.get_run("w", f"run-{write.batch.event.id}")
            store.hold = False
            store.fail_ids.add(write.batch.event.id)
            store.release_all()
    assert isinstance(sent.error, RuntimeUnavailableError)
    assert during == before and await rt.get_worker("w") == before
    assert (page.total_items, page.items, page.next_start) == (0, [], None)
    assert [s.status for s in listed] == ["idle"] and listed[0].active_run is None
    assert (counts.idle, counts.busy) == (1, 0)
    assert (await rt.read_events(after=newest)).events == []


async def test_a_transcript_page_never_counts_an_entry_still_being_written(
    rt: Runtime, store: FaultyStore, gate: Gate
) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    ack = await rt.send_input("w", "work")
    await gate.started.wait()
    store.hold = True
    gate.release.set()  # the run writes its answer: held
    with anyio.fail_after(BOUND):
        await store.wait_held(1)
        page = await rt.transcript("w")
        assert page.total_items == len(page.items) == 1
        assert (await rt.get_worker("w")).transcript_len == 1
        store.hold = False
        store.release_all()
        await rt.wait_for_run("w", ack.run_id)
    assert (await rt.transcript("w")).total_items == 2


async def test_an_input_that_arrives_while_another_is_being_written_is_decided_on_committed_state(
    rt: Runtime, store: FaultyStore
) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    store.hold = True
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            first = spawn(tg, lambda: rt.send_input("w", "first"))
            await store.wait_held(1)
            [write] = store.held
            second = spawn(tg, lambda: rt.send_input("w", "second"))
            await anyio.wait_all_tasks_blocked()
            assert not second.done.is_set()  # it waits for the first to be decided
            store.hold = False
            store.fail_ids.add(write.batch.event.id)
            store.release_all()
    assert isinstance(first.error, RuntimeUnavailableError)
    assert second.error is None and second.value.input_sequence == 0
    assert (await rt.get_worker("w")).active_run is not None


async def test_a_duplicate_input_id_in_flight_gets_an_answer_when_the_first_fails(
    rt: Runtime, store: FaultyStore
) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    store.hold = True
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            first = spawn(tg, lambda: rt.send_input("w", "hi", input_id="i1"))
            await store.wait_held(1)
            [write] = store.held
            repeat = spawn(tg, lambda: rt.send_input("w", "hi", input_id="i1"))
            await anyio.wait_all_tasks_blocked()
            store.hold = False
            store.fail_ids.add(write.batch.event.id)
            store.release_all()
    assert isinstance(first.error, RuntimeUnavailableError)
    assert repeat.error is None and repeat.value.duplicate is False  # the first never happened: this one is new
    again = await rt.send_input("w", "hi", input_id="i1")
    assert again.duplicate is True and again.run_id == repeat.value.run_id


async def test_a_deleted_and_re_created_worker_is_listed_once(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    await rt.stop_worker("w")
    await rt.delete_worker("w")
    await rt.create_worker(worker_id="w")
    assert [s.worker_ref.worker_id for s in (await rt.list_workers()).workers] == ["w"]
    assert (await rt.summary()).workers.total == 1
