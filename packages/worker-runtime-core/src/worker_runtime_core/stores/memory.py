"""`MemoryStore`: the default store, everything in the process's memory and nothing durable."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from ..config import Limits
from ..errors import ConfigError, CursorExpiredError
from ..ids import generate_id, is_valid_id
from ..models import StoreInfo
from ..records import EventRecord, RunRecord, TranscriptRecord
from ..times import now
from .base import Batch, StoreHealth, StoreState

__all__ = ["MemoryStore"]

_INFO = StoreInfo(kind="memory", path=None, fsync=None)


class MemoryStore:
    """Keeps events, transcripts and finished runs in memory; a new one per Runtime start.

    It keeps at least `Limits.event_retention` newest events (0 keeps all), from the limits the Runtime opens it
    with.

    Per Worker it keeps an index of its event ids, so a page filtered by worker costs O(page). A Worker with
    one event stores that id as a bare int, not a list. Retention trims the index with the events: it holds
    only ids that are still kept, and a Worker none of whose events are kept has no entry.
    """

    def __init__(self) -> None:
        self.event_retention = 0  # from the Runtime's limits, at open
        self._events: list[EventRecord] = []
        self._first_id = 1  # id of self._events[0]
        self._by_worker: dict[str, int | list[int]] = {}
        self._transcripts: dict[str, list[TranscriptRecord]] = {}
        self._runs: dict[str, dict[str, RunRecord]] = {}
        self._opened = False
        self._committed = 0

    @property
    def info(self) -> StoreInfo:
        return _INFO

    @property
    def committed_id(self) -> int:
        return self._committed

    @property
    def health(self) -> StoreHealth:
        """Always ``"ok"``: memory does not refuse a write."""
        return "ok"

    async def open(self, runtime_id: str | None, display_name: str | None, *, limits: Limits) -> StoreState:
        if self._opened:
            raise ConfigError("a MemoryStore serves one Runtime start; create a new one")
        if runtime_id is not None and not is_valid_id(runtime_id):
            raise ConfigError(f"invalid runtime id {runtime_id!r}")
        self._opened = True
        self.event_retention = limits.event_retention
        rid = runtime_id or generate_id("rt")
        return StoreState(runtime_id=rid, display_name=display_name or rid, created_at=now())

    async def write(self, batch: Batch) -> None:
        self.append(batch)

    def append(self, batch: Batch) -> None:
        """`write` without the coroutine: it never suspends (the Runtime calls it directly)."""
        event = batch.event
        self._events.append(event)
        self._committed = event.id
        wid = event.worker_id
        if wid is not None:
            ids = self._by_worker.get(wid)
            if ids is None:
                self._by_worker[wid] = event.id
            elif isinstance(ids, int):
                self._by_worker[wid] = [ids, event.id]
            else:
                ids.append(event.id)
            if batch.entry is not None:
                entries = self._transcripts.get(wid)
                if entries is None:
                    self._transcripts[wid] = [batch.entry]
                else:
                    entries.append(batch.entry)
            if batch.ended_run is not None:
                runs = self._runs.get(wid)
                if runs is None:
                    self._runs[wid] = {batch.ended_run.run_id: batch.ended_run}
                else:
                    runs[batch.ended_run.run_id] = batch.ended_run
            if batch.delete_worker:
                self._transcripts.pop(wid, None)
                self._runs.pop(wid, None)
        keep = self.event_retention
        if keep and len(self._events) >= 2 * keep:
            drop = len(self._events) - keep
            dropped = {e.worker_id for e in self._events[:drop] if e.worker_id is not None}
            del self._events[:drop]
            self._first_id += drop
            self._trim_index(dropped)

    def _trim_index(self, worker_ids: set[str]) -> None:
        """Drop the ids below the oldest kept event from the index of each Worker named by a dropped event."""
        first = self._first_id
        by_worker = self._by_worker
        for wid in worker_ids:
            ids = by_worker.get(wid)
            if ids is None:
                continue
            if isinstance(ids, int):
                if ids < first:
                    del by_worker[wid]
                continue
            cut = bisect_left(ids, first)
            if cut == len(ids):
                del by_worker[wid]
            elif cut == len(ids) - 1:
                by_worker[wid] = ids[-1]
            elif cut:
                del ids[:cut]

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        entries = self._transcripts.get(worker_id)
        return entries[start : start + limit] if entries else []

    async def read_events(self, after: int, limit: int, worker_id: str | None = None) -> list[EventRecord]:
        first = self._first_id
        if after < first - 1:
            raise CursorExpiredError(
                f"events up to {first - 1} are no longer kept; resume from after={first - 1}",
                details={"oldest_id": first},
            )
        events = self._events
        if worker_id is None:
            lo = max(after + 1 - first, 0)
            return events[lo : lo + limit]
        ids = self._by_worker.get(worker_id)
        floor = max(after, first - 1)  # ids at or below `first - 1` were dropped by retention
        if ids is None:
            return []
        if isinstance(ids, int):
            return [events[ids - first]] if ids > floor else []
        lo = bisect_right(ids, floor)
        return [events[i - first] for i in ids[lo : lo + limit]]

    async def read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        runs = self._runs.get(worker_id)
        return runs.get(run_id) if runs else None

    async def close(self) -> None:
        return None
