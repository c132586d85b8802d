"""What an event stream reads: pages of events with their transcript entries inline, and the `run_id` filter.

`Runtime.read_stream` checks its arguments and calls `read_frames`. Entries are read in ranges: the events of one
Worker in a page whose entries are near one another (a run's input, then its entries) cost one transcript read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .errors import StoreCorruptError
from .models import StreamEvent, TranscriptEntry
from .records import EventRecord, TranscriptRecord
from .stores.base import RuntimeStore

__all__ = ["ENTRY_KINDS", "entry_sequence", "frame", "read_frames"]

#: The kinds whose frame carries a transcript entry, and the field of their data that names its sequence.
ENTRY_KINDS: dict[str, str] = {
    "input_accepted": "input_sequence",  # null for a queued input: its entry comes with its run_started
    "run_started": "input_sequence",
    "transcript_appended": "sequence",
}
#: Widest range of sequences one transcript read covers: events further apart are read apart.
_RANGE_SPAN = 256
#: How many of a Worker's events one filtered read looks at, at most, before it answers (maybe with no match).
_SCAN_PAGES = 8


def entry_sequence(record: EventRecord) -> int | None:
    """The transcript sequence an event of `ENTRY_KINDS` names (its data is a struct, or a dict read from disk)."""
    field = ENTRY_KINDS.get(record.kind)
    if field is None:
        return None
    data = record.data
    value = data.get(field) if isinstance(data, dict) else getattr(data, field, None)
    return value if type(value) is int else None


async def read_frames(
    store: RuntimeStore,
    after: int,
    size: int,
    worker_id: str | None,
    run_id: str | None,
    runtime_id: str,
    on_corrupt: Callable[[str, StoreCorruptError], object],
) -> tuple[list[StreamEvent], int, bool]:
    """Up to `size` events above `after` (of `worker_id`, of `run_id` when given) with entries inline; returns them,
    the newest id looked at and whether more may follow.

    With `run_id`, the Worker's events are scanned a page at a time (at most `_SCAN_PAGES` pages per call): the cost
    is that Worker's events, and a call that found nothing yet still moves the cursor past what it looked at.
    A transcript the store finds corrupt is reported to `on_corrupt` (which records it) and its entries are null:
    a damaged Worker never stops a stream."""
    if run_id is None:
        records = await store.read_events(after, size + 1, worker_id)
        has_more = len(records) > size
        if has_more:
            del records[size:]
        last = records[-1].id if records else after
    else:
        records = []
        last = after
        has_more = False
        for _ in range(_SCAN_PAGES):
            page = await store.read_events(last, size, worker_id)
            if not page:
                break
            for record in page:
                last = record.id
                if record.run_id == run_id:
                    records.append(record)
                    if len(records) == size:
                        break
            if len(records) == size:
                has_more = True  # maybe: the next read finds out
                break
            if len(page) < size:
                break
        else:
            has_more = True
    entries = await _entries(store, records, on_corrupt)
    frames = [frame(record, runtime_id, entries) for record in records]
    return frames, last, has_more


def frame(
    record: EventRecord, runtime_id: str, entries: dict[tuple[str, int], TranscriptRecord] | None = None
) -> StreamEvent:
    """An event as a stream frame carries it, with its entry when `entries` holds it."""
    event = record.to_wire(runtime_id)
    entry: TranscriptEntry | None = None
    sequence = entry_sequence(record)
    if entries and sequence is not None and record.worker_id is not None:
        found = entries.get((record.worker_id, sequence))
        if found is not None:
            entry = found.to_wire()
    return StreamEvent(
        id=event.id,
        kind=event.kind,
        worker_ref=event.worker_ref,
        run_id=event.run_id,
        created_at=event.created_at,
        data=event.data,
        entry=entry,
    )


async def _entries(
    store: RuntimeStore,
    records: Iterable[EventRecord],
    on_corrupt: Callable[[str, StoreCorruptError], object],
) -> dict[tuple[str, int], TranscriptRecord]:
    """The entries the events name, one transcript read per range of nearby sequences of one Worker."""
    wanted: dict[str, list[int]] = {}
    for record in records:
        sequence = entry_sequence(record)
        if sequence is not None and record.worker_id is not None:
            wanted.setdefault(record.worker_id, []).append(sequence)
    found: dict[tuple[str, int], TranscriptRecord] = {}
    for wid, sequences in wanted.items():
        sequences.sort()
        for lo, hi in _ranges(sequences):
            try:
                got = await store.read_transcript(wid, lo, hi - lo + 1)
            except StoreCorruptError as exc:  # recorded; the frames go on with a null entry, never stuck on it
                on_corrupt(wid, exc)
                continue
            for entry in got:
                found[(wid, entry.sequence)] = entry
    return found


def _ranges(sequences: list[int]) -> list[tuple[int, int]]:
    """Sorted sequences as inclusive ranges, each at most `_RANGE_SPAN` wide."""
    out: list[tuple[int, int]] = []
    lo = hi = sequences[0]
    for seq in sequences[1:]:
        if seq - lo >= _RANGE_SPAN:
            out.append((lo, hi))
            lo = seq
        hi = seq
    out.append((lo, hi))
    return out
