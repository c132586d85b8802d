"""What an event stream reads (`Runtime.read_stream`): entries inline, batched transcript reads, the `run_id`
filter, the cursor checks; and the shutdown signal (`event_signal`, `stopping_frame`)."""

from __future__ import annotations

import anyio
import pytest
from store_faults import FaultyStore

from worker_runtime_core import (
    CursorExpiredError,
    InvalidRequestError,
    Limits,
    MemoryStore,
    Runtime,
)
from worker_runtime_core.records import TranscriptRecord


class CountingStore(FaultyStore):
    """A memory store that counts transcript reads."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.transcript_reads: list[tuple[str, int, int]] = []

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        self.transcript_reads.append((worker_id, start, limit))
        return await super().read_transcript(worker_id, start, limit)


async def _run(rt: Runtime, wid: str, text: str) -> str:
    ack = await rt.send_input(wid, text)
    await rt.wait_for_run(wid, ack.run_id)
    return ack.run_id


async def test_entry_kinds_carry_their_entry_and_others_null(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    run_id = await _run(rt, "w", "héllo 🌍")
    page = await rt.read_stream(0)
    by_kind = {e.kind: e for e in page.events}
    accepted, appended = by_kind["input_accepted"], by_kind["transcript_appended"]
    assert accepted.entry is not None and accepted.entry.content == "héllo 🌍" and accepted.entry.role == "user"
    assert accepted.entry.sequence == accepted.data["input_sequence"] and accepted.entry.event_id == accepted.id
    assert appended.entry is not None and appended.entry.sequence == appended.data["sequence"]
    assert appended.entry.run_id == run_id and appended.entry.role == "assistant"
    assert all(e.entry is None for e in page.events if e.kind not in ("input_accepted", "transcript_appended"))
    plain = (await rt.read_events()).events
    assert [e.id for e in page.events] == [e.id for e in plain] and page.next_after == plain[-1].id


async def test_one_workers_entries_in_a_page_cost_one_transcript_read() -> None:
    store = CountingStore()
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="a")
        await rt.create_worker(worker_id="b")
        for n in range(5):
            await _run(rt, "a", f"a{n}")
            await _run(rt, "b", f"b{n}")
        store.transcript_reads.clear()
        page = await rt.read_stream(0)
    assert sum(e.entry is not None for e in page.events) == 20
    assert sorted(store.transcript_reads) == [("a", 0, 10), ("b", 0, 10)]


async def test_the_run_filter_keeps_one_runs_events_and_moves_past_the_rest(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    await rt.create_worker(worker_id="other")
    first = await _run(rt, "w", "one")
    await _run(rt, "other", "x")
    second = await _run(rt, "w", "two")
    page = await rt.read_stream(0, worker_id="w", run_id=first)
    assert page.events and {e.run_id for e in page.events} == {first}
    assert [e.kind for e in page.events] == ["input_accepted", "transcript_appended", "run_completed"]
    assert page.next_after == (await rt.get_worker("w")).last_event_id  # it looked at all of w's events
    page = await rt.read_stream(0, limit=1, worker_id="w", run_id=second)
    assert [e.kind for e in page.events] == ["input_accepted"] and page.has_more
    page = await rt.read_stream(page.next_after, worker_id="w", run_id=second)
    assert [e.kind for e in page.events] == ["transcript_appended", "run_completed"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"run_id": "run-1"}, "run_id"),
        ({"worker_id": "w", "run_id": "bad id"}, "run_id"),
        ({"worker_id": "bad id"}, "worker_id"),
        ({"after": -1}, "after"),
    ],
)
async def test_bad_stream_arguments_are_invalid_request(rt: Runtime, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await rt.read_stream(**kwargs)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field


async def test_a_cursor_above_the_newest_id_names_it(rt: Runtime) -> None:
    newest = rt.newest_event_id
    with pytest.raises(InvalidRequestError) as caught:
        await rt.read_stream(newest + 1)
    assert caught.value.details == {"field": "after", "newest_id": newest}


async def test_a_cursor_older_than_the_kept_events_expires() -> None:
    async with Runtime(limits=Limits(event_retention=2)) as rt:
        for n in range(5):
            await rt.create_worker(worker_id=f"w{n}")
        with pytest.raises(CursorExpiredError):
            await rt.read_stream(0)


async def test_a_deleted_workers_events_stay_readable_with_null_entries(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    await _run(rt, "w", "bye")
    await rt.stop_worker("w")
    await rt.delete_worker("w")
    page = await rt.read_stream(0, worker_id="w")
    assert "input_accepted" in [e.kind for e in page.events]
    assert all(e.entry is None for e in page.events)


async def _stopping_seen(rt: Runtime, seen: list[int]) -> None:
    """What a stream does: wait on the event signal until the stopping frame is there."""
    with anyio.fail_after(5):
        while rt.stopping_frame is None:
            await rt.event_signal().wait()
    frame = rt.stopping_frame
    seen.append(frame.id)


@pytest.mark.parametrize("logged", [True, False])
async def test_a_waiting_reader_wakes_to_the_stopping_frame(logged: bool) -> None:
    store = FaultyStore(MemoryStore())
    rt = Runtime(store=store)
    await rt.start()
    assert rt.stopping_frame is None
    seen: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stopping_seen, rt, seen)
        await anyio.wait_all_tasks_blocked()
        store.failing = not logged
        await rt.close()
    frame = rt.stopping_frame
    assert frame is not None and frame.kind == "runtime_stopping" and frame.entry is None and frame.data == {}
    if logged:  # the logged event's own id (nothing was logged after it here)
        assert seen == [frame.id] and frame.id == store.written[-1]
    else:  # it could not be logged: id 0, which the stream sends without an id: line
        assert seen == [0] and frame.id == 0
