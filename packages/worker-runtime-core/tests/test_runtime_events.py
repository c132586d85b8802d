"""The event log: ids, kinds and data, filtered pages, long-poll and retention; transcript pages (one run's too)."""

from __future__ import annotations

import anyio
import pytest
from core_helpers import Gate, gated_worker
from store_faults import FaultyStore

from worker_runtime_core import (
    CursorExpiredError,
    Engine,
    InvalidRequestError,
    InvalidWorkerIdError,
    Limits,
    LimitTooLargeError,
    MemoryStore,
    ProfileConfig,
    RunContext,
    RunNotFoundError,
    Runtime,
    WorkerNotFoundError,
)
from worker_runtime_core.records import EventRecord, TranscriptRecord


class CountingStore(MemoryStore):
    """A memory store that records each transcript read as (start, limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int]] = []

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        self.reads.append((start, limit))
        return await super().read_transcript(worker_id, start, limit)


async def test_event_ids_start_at_one_and_have_no_gaps(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    ack = await rt.send_input("w", "hi")
    await rt.wait_for_run("w", ack.run_id)
    await rt.stop_worker("w")
    events = (await rt.read_events()).events
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events] == [
        "runtime_started",
        "worker_created",
        "input_accepted",
        "transcript_appended",
        "run_completed",
        "worker_stopped",
    ]
    started, created, accepted, appended, completed, _ = events
    assert started.worker_ref is None and started.data == {"version": (await rt.summary()).version}
    assert created.data == {"profile": "default"}
    assert accepted.data == {"input_sequence": 0, "input_id": None, "kind": "user"}
    assert accepted.run_id == appended.run_id == completed.run_id == ack.run_id
    assert appended.data == {"sequence": 1, "role": "assistant"}
    assert completed.data["run"]["status"] == "completed"
    assert (await rt.get_worker("w")).last_event_id == events[-1].id


async def test_pages_follow_next_after_without_overlap(rt: Runtime) -> None:
    for n in range(7):
        await rt.create_worker(worker_id=f"w{n}")
    ids: list[int] = []
    after = 0
    while True:
        page = await rt.read_events(after=after, limit=3)
        ids += [e.id for e in page.events]
        after = page.next_after
        if not page.has_more:
            break
    assert ids == list(range(1, 9))


async def test_a_filtered_page_has_only_that_workers_events(rt: Runtime) -> None:
    for wid in ["a", "b"]:
        await rt.create_worker(worker_id=wid)
    for wid in ["a", "b", "a"]:
        ack = await rt.send_input(wid, "hi")
        await rt.wait_for_run(wid, ack.run_id)
    page = await rt.read_events(worker_id="a", limit=4)
    assert all(e.worker_ref is not None and e.worker_ref.worker_id == "a" for e in page.events)
    assert len(page.events) == 4 and page.has_more
    rest = await rt.read_events(worker_id="a", after=page.next_after)
    assert len(rest.events) == 3 and not rest.has_more
    assert (await rt.read_events(worker_id="nobody")).events == []


async def test_wait_answers_as_soon_as_an_event_matches(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    after = (await rt.read_events()).next_after
    pages = []

    async def poll() -> None:
        pages.append(await rt.read_events(after=after, worker_id="w", wait=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.wait_all_tasks_blocked()
        await rt.create_worker(worker_id="other")  # does not match the filter
        await anyio.wait_all_tasks_blocked()
        assert pages == []
        await rt.send_input("w", "wake up")
    assert pages[0].events[0].kind == "input_accepted"


class _ReadHeld(FaultyStore):
    """With `hold_read`, the next read of the event log that finds nothing answers only at `answer`: a write
    committed meanwhile (after the read, before the reader waits) is the one a long-poll must not miss."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_read = False
        self.reading = anyio.Event()
        self.answer = anyio.Event()

    async def read_events(self, after: int, limit: int, worker_id: str | None = None) -> list[EventRecord]:
        records = await self.inner.read_events(after, limit, worker_id)
        if self.hold_read and not records:
            self.hold_read = False
            self.reading.set()
            await self.answer.wait()
        return records


async def test_a_long_poll_is_woken_by_an_event_committed_while_it_reads() -> None:
    store = _ReadHeld()
    async with Runtime(store=store) as rt:
        after = (await rt.read_events()).next_after
        pages = []

        async def poll() -> None:
            pages.append(await rt.read_events(after=after, wait=30))

        store.hold_read = True
        with anyio.fail_after(5):  # a lost wakeup would wait the whole 30 s
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                await store.reading.wait()  # the poller read nothing and has not waited yet
                created = await rt.create_worker(worker_id="other")  # one event, and nothing after it
                store.answer.set()
    assert [e.id for e in pages[0].events] == [created.last_event_id]


async def test_wait_with_nothing_arriving_answers_an_empty_page_at_the_cursor(rt: Runtime) -> None:
    after = (await rt.read_events()).next_after
    page = await rt.read_events(after=after, wait=0.01)
    assert (page.events, page.next_after, page.has_more) == ([], after, False)


@pytest.mark.parametrize("wait", [0, 0.5])
async def test_a_cursor_above_the_newest_event_is_invalid_request_with_the_newest_id(rt: Runtime, wait: float) -> None:
    for n in range(3):
        await rt.create_worker(worker_id=f"w{n}")
    newest = (await rt.read_events()).next_after
    assert (await rt.read_events(after=newest, wait=0)).events == []  # the newest id itself is a fine cursor
    with pytest.raises(InvalidRequestError) as info:
        await rt.read_events(after=newest + 1, wait=wait)
    assert info.value.details == {"field": "after", "newest_id": newest}
    assert str(newest) in info.value.message


async def test_bad_event_queries_are_refused(rt: Runtime) -> None:
    with pytest.raises(InvalidRequestError):
        await rt.read_events(after=-1)
    with pytest.raises(InvalidRequestError):
        await rt.read_events(limit=0)
    with pytest.raises(LimitTooLargeError):
        await rt.read_events(limit=1001)
    with pytest.raises(InvalidRequestError):
        await rt.read_events(wait=31)
    with pytest.raises(InvalidRequestError):
        await rt.read_events(wait=-1)
    with pytest.raises(InvalidRequestError):
        await rt.read_events(worker_id="../x")


async def test_retention_keeps_the_newest_and_an_old_cursor_is_expired() -> None:
    async with Runtime(limits=Limits(event_retention=5)) as rt:
        for n in range(20):
            await rt.create_worker(worker_id=f"w{n}")
        with pytest.raises(CursorExpiredError) as info:
            await rt.read_events(after=0)
        oldest = info.value.details["oldest_id"]
        assert oldest > 1
        page = await rt.read_events(after=oldest - 1)
        assert len(page.events) >= 5 and page.events[-1].id == 21
        assert [e.id for e in page.events] == list(range(oldest, 22))
        filtered = await rt.read_events(after=oldest - 1, worker_id="w19")
        assert [e.id for e in filtered.events] == [21]
        assert (await rt.read_events(after=oldest - 1, worker_id="w0")).events == []


async def test_transcript_pages_are_bounded_and_continue_with_next_start(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    for n in range(5):
        ack = await rt.send_input("w", f"m{n}")
        await rt.wait_for_run("w", ack.run_id)
    first = await rt.transcript("w", limit=4)
    assert (first.start, first.limit, first.total_items, first.next_start) == (0, 4, 10, 4)
    assert [e.sequence for e in first.items] == [0, 1, 2, 3]
    last = await rt.transcript("w", start=8, limit=4)
    assert [e.sequence for e in last.items] == [8, 9] and last.next_start is None
    beyond = await rt.transcript("w", start=50)
    assert beyond.items == [] and beyond.next_start is None
    assert (await rt.transcript("w")).limit == 100
    with pytest.raises(LimitTooLargeError):
        await rt.transcript("w", limit=1001)
    with pytest.raises(InvalidRequestError):
        await rt.transcript("w", start=-1)
    with pytest.raises(InvalidRequestError):
        await rt.transcript("w", limit=0)


# --- one run's entries -----------------------------------------------------------------------------------------


class Chatty(Engine):
    """Answers with as many entries as the input's number."""

    name = "chatty"

    async def run(self, ctx: RunContext) -> None:
        for n in range(int(ctx.content)):
            await ctx.emit(f"{ctx.content}.{n}")


def _chatty() -> Runtime:
    return Runtime(profiles={"default": ProfileConfig("chatty")}, engines={"chatty": Chatty})


async def _runs(rt: Runtime, counts: list[int]) -> list[str]:
    await rt.create_worker(worker_id="w")
    run_ids = []
    for count in counts:
        ack = await rt.send_input("w", str(count))
        await rt.wait_for_run("w", ack.run_id)
        run_ids.append(ack.run_id)
    return run_ids


async def test_a_transcript_page_of_one_run_holds_its_input_and_outputs_only() -> None:
    async with _chatty() as rt:
        first, middle, last = await _runs(rt, [2, 5, 1])  # sequences 0-2, 3-8, 9-10
        page = await rt.transcript("w", run_id=middle)
        assert [e.sequence for e in page.items] == [3, 4, 5, 6, 7, 8]
        assert {e.run_id for e in page.items} == {middle}
        assert (page.start, page.total_items, page.next_start) == (0, 6, None)
        head = await rt.transcript("w", run_id=middle, limit=4)
        assert [e.sequence for e in head.items] == [3, 4, 5, 6] and head.next_start == 7
        tail = await rt.transcript("w", start=head.next_start, limit=4, run_id=middle)  # type: ignore[arg-type]
        assert [e.sequence for e in tail.items] == [7, 8] and tail.next_start is None
        assert (tail.start, tail.total_items) == (7, 6)
        exact = await rt.transcript("w", start=5, limit=4, run_id=middle)
        assert [e.sequence for e in exact.items] == [5, 6, 7, 8] and exact.next_start is None
        beyond = await rt.transcript("w", start=9, run_id=middle)
        assert (beyond.items, beyond.total_items, beyond.next_start) == ([], 6, None)
        assert [e.content for e in (await rt.transcript("w", run_id=first)).items] == ["2", "2.0", "2.1"]
        assert [e.content for e in (await rt.transcript("w", run_id=last)).items] == ["1", "1.0"]
        assert (await rt.get_run("w", middle)).input_sequence == 3


async def test_a_page_of_one_run_reads_only_the_run_s_range() -> None:
    store = CountingStore()
    async with Runtime(store=store, profiles={"default": ProfileConfig("chatty")}, engines={"chatty": Chatty}) as rt:
        _, middle, _ = await _runs(rt, [300, 3, 300])
        store.reads.clear()
        page = await rt.transcript("w", run_id=middle, limit=2)
    assert [e.content for e in page.items] == ["3", "3.0"]
    assert store.reads == [(301, 2)]  # no scan: the run's range comes from its record


async def test_the_entries_of_the_active_run_are_those_committed_so_far(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "go")
    await gate.started.wait()
    page = await rt.transcript(wid, run_id=ack.run_id)
    assert [e.content for e in page.items] == ["go"] and page.total_items == 1
    gate.release.set()
    await rt.wait_for_run(wid, ack.run_id)
    page = await rt.transcript(wid, run_id=ack.run_id)
    assert [e.content for e in page.items] == ["go", "released go"] and page.total_items == 2


async def test_a_transcript_of_an_unknown_run_is_run_not_found_and_a_bad_run_id_invalid() -> None:
    async with _chatty() as rt:
        await _runs(rt, [1])
        with pytest.raises(RunNotFoundError):
            await rt.transcript("w", run_id="run-999")
        for bad in ("bad id", "", "x" * 129, 7):
            with pytest.raises(InvalidRequestError) as info:
                await rt.transcript("w", run_id=bad)  # type: ignore[arg-type]
            assert info.value.details == {"field": "run_id"}
        with pytest.raises(InvalidWorkerIdError):
            await rt.transcript("bad id", run_id="bad id")  # the worker id is reported first
        with pytest.raises(WorkerNotFoundError):
            await rt.transcript("ghost", run_id="run-1")


async def test_runs_recorded_before_runs_counted_their_entries_are_still_paged() -> None:
    async with _chatty() as rt:
        old, previous, last = await _runs(rt, [2, 3, 1])
        record = rt._registry.workers["w"]
        for run_id in (old, previous, last):  # as a store written by an older version holds them
            run = await rt._store.read_run("w", run_id)
            assert run is not None and run.entries is not None
            run.entries = None
        assert record.last_run is not None and record.last_run.entries is None
        expected = {old: [0, 1, 2], previous: [3, 4, 5, 6], last: [7, 8]}
        for run_id, sequences in expected.items():
            page = await rt.transcript("w", run_id=run_id, limit=2)
            assert page.total_items == len(sequences)
            assert [e.sequence for e in page.items] == sequences[:2]
            assert page.next_start == (sequences[2] if len(sequences) > 2 else None)
