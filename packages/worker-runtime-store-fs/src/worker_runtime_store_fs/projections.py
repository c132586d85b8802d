"""Projections: per-Worker files derived from the event log (worker record, transcript, runs, event index).

They are written by the writer thread right after each group's log lines, without their own fsync; a checkpoint
flushes them, and recovery re-applies what the log holds after the last checkpoint (`check=True` makes every
step idempotent).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import msgspec

from . import _fileops as fileops
from .layout import Layout
from .logs import FdCache, IdIndex, IndexedLog
from .records import RecordCorrupt, write_atomic

__all__ = ["Known", "Projections", "run_number", "worker_files"]

_RUN_ID_RE = re.compile(r"run-([1-9][0-9]{0,18})")


def run_number(run_id: str) -> int | None:
    """The number of a run id ``run-<n>`` (the id of the event that accepted its input), else None.

    Only the form the Runtime makes counts: ASCII digits without a leading zero (``str.isdigit`` also accepts
    ``²``, which `int` refuses).
    """
    found = _RUN_ID_RE.fullmatch(run_id)
    return int(found.group(1)) if found is not None else None


class Known:
    """What a replay knows of one Worker's files, read once and kept up to date by `Projections.apply`, so that a
    replayed line costs no lookup of them: the last id of its event index, whether its directory was made in
    this replay, whether its ``worker.json`` exists (None: not looked yet), its transcript's entry count, and its
    runs log's last key."""

    __slots__ = ("count", "made", "index_last", "runs_last", "worker_json")

    def __init__(self, index_last: int, count: int, runs_last: int | None) -> None:
        self.index_last = index_last
        self.made = False
        self.worker_json: bool | None = None
        self.count = count
        self.runs_last = runs_last


class Projections:
    def __init__(
        self, layout: Layout, fds: FdCache, write: Callable[[int, bytes], None], *, capacity: int = 4096
    ) -> None:
        self.layout = layout
        self.fds = fds
        self.write = write
        self.capacity = capacity
        self._files: OrderedDict[str, _WorkerFiles] = OrderedDict()  # recently used workers' files
        # Reader threads and the writer share the cache: a lookup that finds a Worker and then moves it to the
        # end must not meet another thread's eviction of it in between (KeyError). Held for a few dict steps.
        self._files_lock = threading.Lock()
        #: Workers whose files were written since the store last took this set (the checkpoint fsyncs them).
        self.touched: set[str] = set()

    def _of(self, worker_id: str) -> _WorkerFiles:
        with self._files_lock:
            files = self._files.get(worker_id)
            if files is None:
                files = self._files[worker_id] = _worker_files_of(self.layout, worker_id)
                if len(self._files) > self.capacity:
                    self._files.popitem(last=False)
            else:
                self._files.move_to_end(worker_id)
            return files

    def transcript(self, worker_id: str) -> IndexedLog:
        return self._of(worker_id).transcript

    def runs(self, worker_id: str) -> IndexedLog:
        return self._of(worker_id).runs

    def event_index(self, worker_id: str) -> IdIndex:
        return self._of(worker_id).events

    def create(self, worker_id: str, event_id: int, state: bytes) -> None:
        """Project a Worker's creation: its directory, ``worker.json`` and its event id in its index. All or
        nothing: on an OSError what it made is removed again (a failed append to the index cuts it back itself).

        ``worker.json`` of a new directory is written in place, not through a temp file and a rename: the create's
        log line is durable before this runs and the next checkpoint fsyncs the file before it counts, so a crash
        that tears it leaves a create that recovery replays, and the replay rewrites the file from the log.

        Raises:
            OSError: the disk refused.
        """
        files = self._of(worker_id)
        self.touched.add(worker_id)
        directory = files.directory
        try:
            fileops.mkdir(directory, parents=True)
            fd = fileops.open(f"{directory}{os.sep}worker.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                self.write(fd, state)
            finally:
                fileops.close(fd)
            files.events.append(self.fds, event_id, self.write)
        except OSError:
            self.fds.drop_under(directory)
            fileops.rmtree(directory)
            raise

    def repair_tails(self, worker_id: str) -> None:
        """Before projecting again after a failed projection: index lines written but not indexed, cut a torn
        tail, drop a partial id (what a failed write whose cut-back failed may leave)."""
        files = self._of(worker_id)
        for log, key_of in ((files.transcript, _position), (files.runs, _run_key)):
            if os.path.exists(log.data_name):
                self.fds.drop(log.data_name)
                self.fds.drop(log.index_name)
                log.repair(key_of, _whole)
        self.fds.drop(files.events.name)
        files.events.truncate_torn()

    def apply(
        self,
        worker_id: str,
        event_id: int,
        *,
        created: bytes | None = None,
        entry: tuple[int, bytes] | None = None,
        run: tuple[int, bytes] | None = None,
        delete: bool = False,
        check: bool = False,
        known: Known | None = None,
    ) -> None:
        """Project one state change of `worker_id`. With `known` (a replay, which implies `check`), what it says of
        the Worker's files stands for looking at them, and is updated with what this writes.

        Raises:
            RecordCorrupt: with `check`, the transcript misses entries before this one.
            OSError: the disk refused.
        """
        files = self._of(worker_id)
        self.touched.add(worker_id)
        index = files.events
        if known is not None:
            if known.index_last < event_id:
                index.append(self.fds, event_id, self.write)
                known.index_last = event_id
        elif not check or index.last() < event_id:
            index.append(self.fds, event_id, self.write)
        directory = files.directory
        if delete:
            self.fds.drop_under(directory)
            fileops.rmtree(directory)
            if known is not None:
                known.made, known.worker_json, known.count, known.runs_last = False, False, 0, None
            return
        if known is not None:
            if not known.made:
                fileops.mkdir(directory, parents=True)
                known.made = True
        elif check or created is not None:
            fileops.mkdir(directory, parents=True)
        if created is not None and known is not None:
            if known.worker_json is None:
                known.worker_json = os.path.exists(f"{directory}{os.sep}worker.json")
            if not known.worker_json:
                write_atomic(Path(directory, "worker.json"), created, durable=False)
                known.worker_json = True
        elif created is not None and not os.path.exists(f"{directory}{os.sep}worker.json"):
            # Replayed (`check`): a worker.json already there is this create's (written once, by rename; a delete
            # before it in the log removed the directory). The replayed state goes to state.json at the next
            # checkpoint anyway, which recovery reads first.
            write_atomic(Path(directory, "worker.json"), created, durable=False)
        if entry is not None:
            sequence, line = entry
            log = files.transcript
            if check or known is not None:
                count = log.count() if known is None else known.count
                if sequence < count:
                    return self._run(files, run, check, known)
                if sequence > count:
                    raise RecordCorrupt(
                        log.data, log.end_of(count - 1), f"entries {count} to {sequence - 1} are missing"
                    )
            log.append(self.fds, [(sequence, line)], self.write)
            if known is not None:
                known.count = sequence + 1
        self._run(files, run, check, known)

    def _run(self, files: _WorkerFiles, run: tuple[int, bytes] | None, check: bool, known: Known | None) -> None:
        if run is None:
            return
        number, line = run
        log = files.runs
        if check or known is not None:
            last = log.last_key() if known is None else known.runs_last
            # Keys are run numbers, in order but for runs that ended out of their acceptance order (a queued run
            # cancelled while the run ahead of it went on): below the last key, look the line up.
            if last is not None and last >= number and (last == number or log.find_unordered(number) >= 0):
                return
        log.append(self.fds, [(number, line)], self.write)
        if known is not None:
            known.runs_last = number


class _WorkerFiles(msgspec.Struct, gc=False):
    """One Worker's files: strings and structs of strings only, so untracked by the garbage collector (a store
    keeps thousands of these; start-up makes one per Worker)."""

    directory: str
    transcript: IndexedLog
    runs: IndexedLog
    events: IdIndex


def _worker_files_of(layout: Layout, worker_id: str) -> _WorkerFiles:
    directory = str(layout.worker_dir(worker_id))  # validates the id
    d = f"{directory}{os.sep}"
    return _WorkerFiles(
        directory,
        IndexedLog(f"{d}transcript.jsonl", f"{d}transcript.idx"),
        IndexedLog(f"{d}runs.jsonl", f"{d}runs.idx"),
        IdIndex(f"{layout.index}{os.sep}{worker_id}.idx"),
    )


def worker_files(layout: Layout, worker_id: str) -> list[str]:
    """Every file a Worker's projections and checkpoints write (its directory last)."""
    directory = layout.worker_dir(worker_id)
    names = ("transcript.jsonl", "transcript.idx", "runs.jsonl", "runs.idx", "worker.json", "state.json")
    return [str(layout.worker_index(worker_id)), *(str(directory / name) for name in names), str(directory)]


def _whole(payload: bytes) -> bool:
    return True  # a line whose checksum matches was written whole by this store


def _position(payload: bytes, position: int) -> int:
    return position  # a transcript's key is the entry's sequence, its position


class _RunId(msgspec.Struct):
    run_id: str


_RUN_ID = msgspec.json.Decoder(_RunId)


def _run_key(payload: bytes, position: int) -> int:
    try:
        number = run_number(_RUN_ID.decode(payload).run_id)
    except (msgspec.DecodeError, msgspec.ValidationError):
        number = None
    return number if number is not None else position


def default_write(fd: int, data: bytes) -> None:
    fileops.write(fd, data)
