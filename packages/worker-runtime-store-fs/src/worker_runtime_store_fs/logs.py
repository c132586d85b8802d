"""Append-only JSON Lines files with an offset index and a checksum on every line, read at O(page) cost.

An `IndexedLog` is a data file of lines and an index file of fixed 16-byte records ``(key, end offset)``, one per
line, little-endian. Line *n* spans ``end[n-1]`` (0 for the first) to ``end[n]``. Keys increase: a transcript's
key is the entry's sequence, the event log's the event id, the runs log's the run number. So a page of lines is
two `pread` calls wherever it is in the file, and a key is found by binary search over the index.

Each line is ``<json>\t<crc32 of the json, 8 hex digits>\n`` (`frame`): msgspec's JSON holds no raw tab or newline,
so the checksum sits in the last 10 bytes, and every read checks it (`unframe`); a mismatch is `RecordCorrupt` with
the path and the offset of the line.

Data is written before its index record, so after a crash the index may be short (lines written but not indexed)
or the data may end in a torn line; `repair` indexes the complete lines and truncates the torn one (a line without
its newline or whose checksum does not match).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import msgspec

from . import _fileops as fileops
from .records import RecordCorrupt

__all__ = ["FdCache", "IdIndex", "IndexedLog", "Repair", "frame", "unframe"]

_REC = struct.Struct("<qq")
_SIZE = _REC.size
_SCAN = 4096  # index records read per step of `IndexedLog.find_unordered`'s pass
_TAIL = 10  # b"\t", 8 hex digits, b"\n"


def frame(payload: bytes) -> bytes:
    """A log line: `payload` (one JSON document, no newline), a tab, its CRC-32 in 8 hex digits, a newline."""
    return b"%b\t%08x\n" % (payload, zlib.crc32(payload))


def unframe(line: bytes) -> bytes | None:
    """The payload of a whole line whose checksum matches; None for a torn, changed or unchecksummed line."""
    if len(line) < _TAIL or line[-_TAIL] != 0x09 or line[-1] != 0x0A:
        return None
    payload = line[:-_TAIL]
    return payload if b"%08x" % zlib.crc32(payload) == line[-9:-1] else None


class FdCache:
    """Open append descriptors, least recently used closed first. Used by the writer thread only."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._fds: OrderedDict[str, int] = OrderedDict()

    def get(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = fileops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._fds[path] = fd
        if len(self._fds) > self.capacity:
            _, old = self._fds.popitem(last=False)
            fileops.close(old)
        return fd

    def drop(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            fileops.close(fd)

    def drop_under(self, directory: str) -> None:
        prefix = directory.rstrip(os.sep) + os.sep
        for path in [p for p in self._fds if p.startswith(prefix)]:
            self.drop(path)

    def close(self) -> None:
        while self._fds:
            _, fd = self._fds.popitem()
            fileops.close(fd)


class Repair:
    """What `IndexedLog.repair` did: lines indexed, bytes of torn tail cut, and where."""

    __slots__ = ("count", "indexed", "path", "rebuilt", "sealed", "torn_at", "torn_bytes")

    def __init__(self, path: Path | str) -> None:
        self.path = path  # a str from `IndexedLog.repair`: no `Path` made per log at start-up
        self.count = 0  # lines in the log once repaired
        self.indexed = 0
        self.rebuilt = False
        self.sealed = False  # the log was a closed segment, which should never need repair
        self.torn_at = 0
        self.torn_bytes = 0

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.torn_bytes or self.rebuilt)


def _read_records(path: str | Path, size: int, first: int, n: int) -> bytes:
    """Records `first` to `first + n` of a file of fixed-size records (whole records only; b"" when missing)."""
    if n <= 0:
        return b""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        raw = os.pread(fd, n * size, first * size)
    finally:
        os.close(fd)
    return raw[: len(raw) - len(raw) % size]


class IndexedLog(msgspec.Struct, gc=False):
    """One data file plus its index. Readers may run in any thread; appends come from one writer thread.

    It keeps its paths as strings (a store holds thousands of these: no `Path` objects for the collector to scan),
    and is untracked by the garbage collector (``gc=False``: it holds two strings, never a cycle); `data` and
    `index` give the paths as `Path`. Given a `Path`, it keeps its string.
    """

    data_name: str
    index_name: str

    def __post_init__(self) -> None:
        if type(self.data_name) is not str or type(self.index_name) is not str:
            self.data_name, self.index_name = str(self.data_name), str(self.index_name)

    @property
    def data(self) -> Path:
        return Path(self.data_name)

    @property
    def index(self) -> Path:
        return Path(self.index_name)

    # --- reading ---------------------------------------------------------------------------------------------

    def count(self) -> int:
        try:
            return os.stat(self.index_name).st_size // _SIZE
        except FileNotFoundError:
            return 0

    def sealed(self) -> bool:
        """The index covers the data exactly (two `stat` calls and one `pread`): nothing to repair."""
        try:
            data_size = os.stat(self.data_name).st_size
            index_size = os.stat(self.index_name).st_size
        except FileNotFoundError:
            return False
        return index_size % _SIZE == 0 and self.end_of(index_size // _SIZE - 1) == data_size

    def entries(self, first: int, n: int) -> list[tuple[int, int]]:
        """Index records ``(key, end)`` of lines `first` to `first + n` (fewer at the end)."""
        raw = _read_records(self.index_name, _SIZE, first, n)
        return list(_REC.iter_unpack(raw))

    def end_of(self, position: int) -> int:
        """End offset of line `position`, 0 for position -1."""
        if position < 0:
            return 0
        entries = self.entries(position, 1)
        return entries[0][1] if entries else 0

    def _span(self, first: int, n: int) -> tuple[int, list[tuple[int, int]], bytes]:
        """Lines `first` to `first + n`: the offset of the first, their index records ``(key, end)``, and their
        bytes. One `pread` of the index (from the record before `first`, which gives the start) and one of the data.
        """
        before = 1 if first > 0 else 0
        records = list(_REC.iter_unpack(_read_records(self.index_name, _SIZE, first - before, n + before)))
        start = records.pop(0)[1] if before and records else 0
        if not records:
            return start, records, b""
        end = records[-1][1]
        fd = os.open(self.data_name, os.O_RDONLY)
        try:
            blob = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        if len(blob) != end - start:
            raise RecordCorrupt(self.data, start + len(blob), "the data file is shorter than its index says")
        return start, records, blob

    def read(self, first: int, n: int, *, verify: bool = True) -> list[tuple[int, int, bytes]]:
        """Lines `first` to `first + n` as ``(key, offset, payload)``: two `pread` calls, whatever the log length.

        Raises:
            RecordCorrupt: a line's checksum does not match (names the line's offset). With ``verify=False`` the
                whole lines come back unchecked instead, for a caller that handles damage line by line.
        """
        start, records, blob = self._span(first, n)
        lines = []
        offset = start
        for key, line_end in records:
            line = blob[offset - start : line_end - start]
            if verify:
                payload = unframe(line)
                if payload is None:
                    raise RecordCorrupt(self.data, offset, _damage(line))
                line = payload
            lines.append((key, offset, line))
            offset = line_end
        return lines

    def read_array(self, first: int, n: int) -> bytes:
        """The payloads of lines `first` to `first + n` as one JSON array, ``b"[...]"``, every checksum checked:
        a page to decode in one call. Cheaper than `read` per line: the line tails are checked all at once.

        Raises:
            RecordCorrupt: a line's checksum does not match (names the line's offset, as `read` does).
        """
        start, records, blob = self._span(first, n)
        payloads: list[bytes] = []
        tails: list[bytes] = []
        add_payload, add_tail = payloads.append, tails.append
        begin = 0
        for _, end in records:
            end -= start
            add_payload(blob[begin : end - _TAIL])
            add_tail(blob[end - _TAIL : end])
            begin = end
        # Each line ends in a tab, the CRC-32 of the rest in 8 hex digits, and a newline (see `frame`).
        count = len(payloads)
        tail = b"".join(tails)
        crcs = struct.pack(f">{count}I", *map(zlib.crc32, payloads)).hex().encode()
        if (
            tail[0::_TAIL] != b"\t" * count
            or tail[_TAIL - 1 :: _TAIL] != b"\n" * count
            or tail.translate(None, b"\t\n") != crcs
        ):
            self.read(first, n)  # raises RecordCorrupt for the first damaged line, with its offset
            raise RecordCorrupt(self.data, start, "a line's checksum does not match")  # pragma: no cover
        return b"[" + b",".join(payloads) + b"]"

    def find(self, key: int) -> int:
        """Position of the line with `key`, or -1 (binary search over the index)."""
        lo, hi = 0, self.count()
        while lo < hi:
            mid = (lo + hi) // 2
            entries = self.entries(mid, 1)
            if not entries:
                return -1
            mid_key = entries[0][0]
            if mid_key == key:
                return mid
            if mid_key < key:
                lo = mid + 1
            else:
                hi = mid
        return -1

    def find_unordered(self, key: int) -> int:
        """`find`, for a log whose keys are in order but for a few lines appended out of it (a Worker's runs log:
        a run that ended before the run ahead of it, such as a queued run cancelled while the active one went on):
        when the binary search misses, a pass over the index."""
        position = self.find(key)
        if position >= 0:
            return position
        for first in range(0, self.count(), _SCAN):
            for i, (found, _) in enumerate(self.entries(first, _SCAN)):
                if found == key:
                    return first + i
        return -1

    def bisect(self, key: int) -> int:
        """Position of the first line whose key is above `key`."""
        lo, hi = 0, self.count()
        while lo < hi:
            mid = (lo + hi) // 2
            entries = self.entries(mid, 1)
            if entries and entries[0][0] <= key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def last_key(self) -> int | None:
        n = self.count()
        entries = self.entries(n - 1, 1) if n else []
        return entries[0][0] if entries else None

    # --- writing (the writer thread) -------------------------------------------------------------------------

    def append(self, fds: FdCache, lines: list[tuple[int, bytes]], write: Callable[[int, bytes], None]) -> None:
        """Append lines (each ending in a newline) and their index records.

        On an OSError both files are cut back to where they were, so nothing half-written stays behind.

        Raises:
            OSError: the disk refused; both files are as they were.
            fileops.OutcomeUnknown: the write failed and the files could not be cut back.
        """
        data_fd = fds.get(self.data_name)
        index_fd = fds.get(self.index_name)
        data_size = os.fstat(data_fd).st_size
        index_size = os.fstat(index_fd).st_size
        records = bytearray()
        end = data_size
        for key, line in lines:
            end += len(line)
            records += _REC.pack(key, end)
        try:
            write(data_fd, b"".join(line for _, line in lines))
            write(index_fd, bytes(records))
        except OSError as exc:
            try:
                os.ftruncate(data_fd, data_size)
                os.ftruncate(index_fd, index_size)
            except OSError as cut:
                raise fileops.OutcomeUnknown(
                    exc.errno or 0, f"{exc.strerror or exc}, and cutting {self.data} back failed: {cut.strerror}"
                ) from exc
            raise

    def cut_back(self, fds: FdCache, position: int, *, durable: bool) -> None:
        """Drop line `position` and every later one (a write taken back); with `durable`, fsync the cut data (an
        index record past the data is dropped by `repair`).

        Raises:
            fileops.OutcomeUnknown: the files could not be cut (or the cut not made durable).
        """
        data_fd = fds.get(self.data_name)
        index_fd = fds.get(self.index_name)
        try:
            os.ftruncate(data_fd, self.end_of(position - 1))
            os.ftruncate(index_fd, position * _SIZE)
        except OSError as exc:
            raise fileops.OutcomeUnknown(exc.errno or 0, f"cutting {self.data} back failed: {exc.strerror}") from exc
        if durable:
            fileops.fsync(data_fd)

    # --- recovery --------------------------------------------------------------------------------------------

    def repair(self, key_of: Callable[[bytes, int], int], valid: Callable[[bytes], bool]) -> Repair:
        """Make the index match the data: drop index records past the data, index complete lines that are not
        indexed yet (`key_of(payload, position)` gives their key), and cut a torn tail: the first line that is
        not whole, fails its checksum or is not `valid` (given the payload), and everything after it.
        A missing index is rebuilt from the data.
        """
        report = Repair(self.data_name)
        try:
            data_size = os.stat(self.data_name).st_size
        except FileNotFoundError:
            if os.path.exists(self.index_name):
                os.truncate(self.index_name, 0)
            return report
        if not os.path.exists(self.index_name):
            report.rebuilt = True
            fileops.close(fileops.open(self.index_name, os.O_WRONLY | os.O_CREAT))
        index_size = os.stat(self.index_name).st_size
        usable = index_size - index_size % _SIZE
        entries = self.entries(0, usable // _SIZE) if usable else []
        good = 0
        previous = 0
        for _, end in entries:  # keep the records that describe data that is there, in order
            if end <= previous or end > data_size:
                break
            previous = end
            good += 1
        if good * _SIZE != index_size:
            os.truncate(self.index_name, good * _SIZE)
        start = previous
        report.count = good
        if start == data_size:
            return report
        with open(self.data_name, "rb") as f:
            f.seek(start)
            tail = f.read()
        records = bytearray()
        position = good
        offset = start
        for line in tail.splitlines(keepends=True):
            payload = unframe(line)
            if payload is None or not valid(payload):
                break
            offset += len(line)
            records += _REC.pack(key_of(payload, position), offset)
            position += 1
        if records:
            fd = fileops.open(self.index_name, os.O_WRONLY | os.O_APPEND)
            try:
                fileops.write(fd, bytes(records))
            finally:
                fileops.close(fd)
            report.indexed = position - good
            report.count = position
        if offset < data_size:
            report.torn_at = offset
            report.torn_bytes = data_size - offset
            os.truncate(self.data_name, offset)
        return report


def _damage(line: bytes) -> str:
    if len(line) < _TAIL or line[-_TAIL] != 0x09 or line[-1] != 0x0A:
        return "the line has no checksum (not a whole line of this format)"
    return "the line's checksum does not match: it changed after it was written"


_ID = struct.Struct("<q")


class IdIndex(msgspec.Struct, gc=False):
    """A file of increasing 8-byte event ids: the events that name one Worker, so a filtered page is O(page).
    Untracked by the garbage collector, like `IndexedLog` (it holds one string)."""

    name: str

    def __post_init__(self) -> None:
        if type(self.name) is not str:
            self.name = str(self.name)

    @property
    def path(self) -> Path:
        return Path(self.name)

    def count(self) -> int:
        try:
            return os.stat(self.name).st_size // _ID.size
        except FileNotFoundError:
            return 0

    def ids(self, first: int, n: int) -> list[int]:
        raw = _read_records(self.name, _ID.size, first, n)
        return [value for (value,) in _ID.iter_unpack(raw)]

    def bisect(self, event_id: int) -> int:
        """Position of the first id above `event_id`."""
        lo, hi = 0, self.count()
        while lo < hi:
            mid = (lo + hi) // 2
            found = self.ids(mid, 1)
            if found and found[0] <= event_id:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def last(self) -> int:
        n = self.count()
        found = self.ids(n - 1, 1) if n else []
        return found[0] if found else 0

    def append(self, fds: FdCache, event_id: int, write: Callable[[int, bytes], None]) -> None:
        """Append one id; on an OSError the file is cut back to whole records (a short write leaves none)."""
        fd = fds.get(self.name)
        try:
            write(fd, _ID.pack(event_id))
        except OSError:
            self.cut(os.fstat(fd).st_size // _ID.size)
            raise

    def cut(self, count: int) -> None:
        """Keep the first `count` ids (a failed append, a create taken back); errors are ignored."""
        try:
            if os.stat(self.name).st_size != count * _ID.size:
                os.truncate(self.name, count * _ID.size)
        except OSError:
            pass

    def truncate_torn(self) -> int:
        """Cut a partial id at the end (what a torn append leaves); the last id, 0 when there is none."""
        try:
            size = os.stat(self.name).st_size
        except FileNotFoundError:
            return 0
        whole = size - size % _ID.size
        if whole != size:
            os.truncate(self.name, whole)
        found = self.ids(whole // _ID.size - 1, 1) if whole else []
        return found[0] if found else 0
