"""The runtime-wide event log, which is also the store's write-ahead log: one line per state change, in
segments of bounded size, each an `IndexedLog` keyed by event id."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from . import _fileops as fileops
from .layout import Layout
from .logs import FdCache, IndexedLog, Repair

__all__ = ["SEGMENT_BYTES", "EventLog", "Gap", "line_event_id"]

#: A segment is closed and a new one started once it holds this many bytes.
SEGMENT_BYTES = 64 * 1024 * 1024


class _IdOnly(msgspec.Struct):
    id: int


class _EventIdLine(msgspec.Struct):
    event: _IdOnly


_ID_DECODER = msgspec.json.Decoder(_EventIdLine)


def line_event_id(line: bytes, position: int = 0) -> int:
    """The event id of a log line's payload (raises msgspec.DecodeError for a damaged one)."""
    return _ID_DECODER.decode(line).event.id


def _valid(line: bytes) -> bool:
    try:
        line_event_id(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


class Gap:
    """Event ids missing between two segments: `first` to `last`, after `offset` of segment `path`."""

    __slots__ = ("first", "last", "offset", "path")

    def __init__(self, path: Path, offset: int, first: int, last: int) -> None:
        self.path = path
        self.offset = offset
        self.first = first
        self.last = last


class EventLog:
    """Segments named by their first event id; the newest takes appends. Ids are contiguous across segments."""

    def __init__(self, layout: Layout, segment_bytes: int = SEGMENT_BYTES, *, durable: bool = True) -> None:
        self.layout = layout
        self.segment_bytes = segment_bytes
        self.durable = durable  # fsync the newest segment at open, an index when the log moves on, new entries
        self.firsts: list[int] = []
        self.logs: dict[int, IndexedLog] = {}
        self.last_id = 0

    def open(self) -> tuple[list[Repair], list[Gap]]:
        """Find the segments and repair them: the newest (a torn tail), and any older one whose index does not
        end where its data does (a missing or short index). Report every gap in the ids between segments."""
        fileops.mkdir(self.layout.events, parents=True)
        repairs = []
        self.firsts = self.layout.segments()
        self.logs = {first: IndexedLog(*map(str, self.layout.segment(first))) for first in self.firsts}
        for first in self.firsts:
            log = self.logs[first]
            if first == self.firsts[-1] or not log.sealed():
                report = log.repair(line_event_id, _valid)
                if report.changed:
                    if first != self.firsts[-1] and not report.rebuilt:
                        report.sealed = True  # a closed segment should never need this: say so
                    repairs.append(report)
        while len(self.firsts) > 1 and self.logs[self.firsts[-1]].count() == 0:
            empty = self.firsts.pop()  # a segment started just before a crash, with nothing in it
            for path in (self.logs[empty].data, self.logs[empty].index):
                fileops.unlink(path)
            del self.logs[empty]
        if self.firsts:
            newest = self.logs[self.firsts[-1]]
            last = newest.last_key()
            self.last_id = last if last is not None else self.firsts[-1] - 1
            if self.durable:
                # A process killed between a commit's write and its fsync left lines that the page cache kept and
                # that are served (and checkpointed) from now on: make them durable first. Every older segment
                # is durable already: each commit is fsynced before the next one can start a new segment.
                fd = fileops.open(newest.data, os.O_RDONLY)
                try:
                    fileops.fsync(fd)
                finally:
                    fileops.close(fd)
        return repairs, self._gaps()

    def _gaps(self) -> list[Gap]:
        gaps = []
        for first, following in zip(self.firsts, self.firsts[1:], strict=False):
            log = self.logs[first]
            last = log.last_key()
            expected = following - 1
            if last != expected:
                gaps.append(Gap(log.data, log.end_of(log.count() - 1), (last or first - 1) + 1, expected))
        return gaps

    @property
    def first_id(self) -> int:
        """The oldest id kept (the next id when the log is empty)."""
        return self.firsts[0] if self.firsts else self.last_id + 1

    def append(self, fds: FdCache, lines: list[tuple[int, bytes]], write: Callable[[int, bytes], None]) -> None:
        first_id = lines[0][0]
        started = False
        if not self.firsts or os.fstat(fds.get(self.logs[self.firsts[-1]].data_name)).st_size >= self.segment_bytes:
            if self.durable and self.firsts:  # its index, before anything in the next segment is acknowledged
                # (its data is durable: every commit was fsynced before the next one, and `open` fsynced what a
                # killed process left unsynced)
                fileops.fsync(fds.get(self.logs[self.firsts[-1]].index_name))
            self.firsts.append(first_id)
            log = self.logs[first_id] = IndexedLog(*map(str, self.layout.segment(first_id)))
            started = True
            if self.durable:  # the new segment's directory entries, before its first line can be acknowledged
                fds.get(log.data_name)
                fds.get(log.index_name)
                fileops.fsync_dir(self.layout.events)
        try:
            self.logs[self.firsts[-1]].append(fds, lines, write)
        except OSError:
            if started:  # leave no empty segment behind
                log = self.logs.pop(self.firsts.pop())
                for path in (log.data, log.index):
                    fds.drop(str(path))
                    fileops.unlink(path)
            raise
        self.last_id = lines[-1][0]

    def cut_back(self, fds: FdCache, event_id: int) -> None:
        """Take back the newest lines from `event_id` on (a batch refused after it was appended); fsynced when the
        log is durable. They are all in the newest segment (one append writes one segment).

        Raises:
            fileops.OutcomeUnknown: the cut could not be made (or made durable).
        """
        log = self.logs[self.firsts[-1]]
        position = log.find(event_id)
        if position < 0:
            return
        log.cut_back(fds, position, durable=self.durable)
        self.last_id = event_id - 1

    @property
    def current(self) -> IndexedLog | None:
        return self.logs[self.firsts[-1]] if self.firsts else None

    def _segment_of(self, event_id: int) -> int | None:
        firsts = list(self.firsts)
        i = bisect.bisect_right(firsts, event_id) - 1
        return firsts[i] if i >= 0 else None

    def read(
        self, after: int, limit: int, upto: int, *, verify: bool = True
    ) -> list[tuple[int, int, bytes, IndexedLog]]:
        """Up to `limit` lines with ids `after + 1` to `upto`, as ``(id, offset, payload, log)``.

        Raises:
            RecordCorrupt: a line's checksum does not match (with ``verify=False``: whole lines, unchecked).
        """
        found: list[tuple[int, int, bytes, IndexedLog]] = []
        next_id = after + 1
        while len(found) < limit and next_id <= upto:
            first = self._segment_of(next_id)
            if first is None:
                next_id = self.first_id
                continue
            log = self.logs[first]
            want = min(limit - len(found), upto - next_id + 1)
            lines = log.read(next_id - first, want, verify=verify)
            if not lines:
                later = bisect.bisect_right(self.firsts, first)
                if later < len(self.firsts) and self.firsts[later] > next_id:  # a gap (reported at open): skip it
                    next_id = self.firsts[later]
                    continue
                break
            found.extend((key, offset, line, log) for key, offset, line in lines)
            next_id = lines[-1][0] + 1
        return found

    def read_one(self, event_id: int) -> tuple[int, int, bytes, IndexedLog] | None:
        first = self._segment_of(event_id)
        if first is None:
            return None
        log = self.logs[first]
        lines = log.read(event_id - first, 1)
        return (lines[0][0], lines[0][1], lines[0][2], log) if lines else None

    def drop_before(self, event_id: int, fds: FdCache) -> None:
        """Delete whole segments whose every id is below `event_id` (never the newest)."""
        while len(self.firsts) > 1 and self.firsts[1] <= event_id:
            first = self.firsts.pop(0)
            log = self.logs.pop(first)
            for path in (log.data, log.index):
                fds.drop(str(path))
                fileops.unlink(path)
