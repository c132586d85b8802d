"""`FsRuntimeStore`: durable, crash-safe persistence of a Runtime on the local disk."""

from __future__ import annotations

import bisect
import errno
import fcntl
import itertools
import logging
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
import msgspec

from worker_runtime_core import (
    AssistantIntent,
    ConfigError,
    CursorExpiredError,
    Diagnostic,
    Limits,
    RuntimeDefaultProfile,
    RuntimeUnavailableError,
    StoreCorruptError,
    StoreInfo,
    WorkerRuntimeError,
    generate_id,
    is_valid_id,
)
from worker_runtime_core.records import EventRecord, InputKeyRecord, RunRecord, TranscriptRecord, WorkerRecord
from worker_runtime_core.stores import Batch, StoreHealth, StoreState
from worker_runtime_core.times import format_time, now

from . import _fileops as fileops
from .errors import StoreFormatError, StoreLockedError, StoreUnwritableError
from .eventlog import SEGMENT_BYTES, EventLog
from .layout import FORMAT_VERSION, Layout
from .lines import CheckpointRecord, RuntimeRecord, WalLineOut, decode_event, encode
from .logs import FdCache, IndexedLog, frame, unframe
from .projections import Projections, default_write, run_number, worker_files
from .records import RecordCorrupt, read_record, write_atomic
from .recovery import load
from .upgrade import upgrade_v1

__all__ = ["FsyncPolicy", "FsRuntimeStore"]

logger = logging.getLogger("worker_runtime_store_fs")

FsyncPolicy = Literal["always", "batch", "never"]
_POLICIES = ("always", "batch", "never")
T = TypeVar("T")
#: A checkpoint with at least this many files to make durable does it with one `sync` instead of an fsync each
#: (a burst of creates leaves thousands of new Workers' files to the next checkpoint).
_SYNC_ALL_AT = 1024
_FILES_PER_WORKER = len(worker_files(Layout("/"), "w"))  # the paths `worker_files` gives for each Worker
_ENTRY_DECODER = msgspec.json.Decoder(TranscriptRecord)
_PAGE_DECODER = msgspec.json.Decoder(list[TranscriptRecord])
_RUN_DECODER = msgspec.json.Decoder(RunRecord)
_LINES = msgspec.json.Encoder()
_KEY_CHUNK = 1000  # keys encoded per write when the key file is rewritten: each write lets other threads run
#: A group of more batches than this (the run ends of a start-up, a burst) is acknowledged once its log lines are
#: durable, and the Workers' files are brought up to date after, by the catch-up thread (or by a read, a write or
#: the close that needs them first), so the commit's time does not grow with the files it would touch.
_PROJECT_INLINE = 64
_CATCH_UP_SLICE = 16  # Workers the catch-up thread brings up to date per hold of the commit lock
#: Errors of a write, open or rename that leave nothing on disk once the file is cut back: the write is refused
#: and the next one is tried normally. Any other failure of the event log (EIO, a failed fsync) is an unknown
#: outcome.
_REFUSED = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EMFILE, errno.ENFILE}
)


class _Pending:
    """One batch on its way to disk: its encoded lines, and how its caller learns the outcome."""

    __slots__ = (
        "created",
        "delete",
        "entry",
        "error",
        "event_id",
        "finished",
        "input_key",
        "line",
        "queued",
        "run",
        "run_id",
        "state",
        "wake",
        "worker_id",
    )

    def __init__(self, batch: Batch) -> None:
        event = batch.event
        self.event_id = event.id
        self.worker_id = event.worker_id
        self.state = encode(batch.worker) if batch.worker is not None else None
        self.created = event.kind == "worker_created"
        self.delete = batch.delete_worker
        self.input_key = batch.input_key
        self.run_id = event.run_id
        self.queued = batch.queued_content  # a queued input's content: in this line only, kept until its run goes
        self.line = frame(
            encode(
                WalLineOut(
                    event=event,
                    worker=msgspec.Raw(self.state) if self.state is not None else None,
                    entry=batch.entry,
                    ended_run=batch.ended_run,
                    input_key=batch.input_key,
                    delete_worker=batch.delete_worker,
                    queued_content=batch.queued_content,
                )
            )
        )
        self.entry = (batch.entry.sequence, frame(encode(batch.entry))) if batch.entry is not None else None
        self.run: tuple[int, bytes] | None = None
        if batch.ended_run is not None:
            number = run_number(batch.ended_run.run_id)
            if number is not None:
                self.run = (number, frame(encode(batch.ended_run)))
        self.finished = False
        self.error: WorkerRuntimeError | None = None
        self.wake: anyio.Event | None = anyio.Event()  # None once finished


class _Checkpoint:
    """One checkpoint at `event_id`: what the writer handed over (taken under the commit lock in O(1)), written
    by a background thread while the writer goes on.

    `dirty` are the Worker states to write (a delete that commits meanwhile takes its Worker out, under the
    projection lock); `queued` the content of the queued inputs of each Worker whose queue changed (its
    ``queued.json``, removed when empty; a delete takes it out too); `key_ops` the input keys accepted (a record)
    and Workers deleted (an id) since the last checkpoint, in log order; `touched` the Workers whose projection
    files were written; `segments` the event log files to fsync (``batch`` policy only: ``always`` has fsynced
    them already).
    """

    __slots__ = ("dirty", "done", "error", "event_id", "key_ops", "queued", "segments", "touched")

    def __init__(
        self,
        event_id: int,
        dirty: dict[str, bytes],
        key_ops: list[InputKeyRecord | str],
        touched: set[str],
        segments: list[str],
        queued: dict[str, dict[str, str]],
    ) -> None:
        self.event_id = event_id
        self.dirty = dirty
        self.queued = queued
        self.key_ops = key_ops
        self.touched = touched
        self.segments = segments
        self.done = threading.Event()
        self.error: BaseException | None = None


class FsRuntimeStore:
    """Persists a Runtime under one root directory; pass it as ``Runtime(store=FsRuntimeStore(path))``.

    Args:
        path: the root directory (created when missing).
        fsync: ``always`` (default): a batch is acknowledged once its log line is fsynced, and concurrent
            batches share one fsync (group commit). ``batch``: one fsync every `fsync_interval_ms` for everything
            written since the last; a batch is acknowledged once that fsync covers it (so it waits up to the
            interval, and a power loss loses nothing acknowledged). ``never``: the OS decides; a power loss may
            lose any recent work (a process crash loses nothing). For tests and benchmarks.
        fsync_interval_ms: the interval of the ``batch`` policy.
        checkpoint_every: events between checkpoints. A checkpoint is written in a background thread while
            input goes on, so a restart replays at most about twice this many log lines.
        segment_bytes: size at which the event log starts a new segment.

    Raises (from `Runtime.start`): `StoreLockedError` when another process owns the root, `StoreFormatError` when
    the root belongs to another runtime id, is of a newer format or its runtime record is unreadable. A store of
    format version 1 is upgraded in place at open (a `store_upgraded` info diagnostic says so).

    When the disk fails (`health` says which): a write refused with nothing of it on disk (ENOSPC, EACCES, EROFS,
    EDQUOT on the event log or on a create's files) is cut back and raises `RuntimeUnavailableError`; the next
    write is tried normally. A failed fsync (or any other failure of the event log) leaves the outcome unknown:
    that write and every later one raise `RuntimeUnavailableError` with ``details={"outcome": "unknown"}`` until
    the store is opened again. A Worker's files that cannot be updated after its log line is durable are brought
    up to date from the log on its next read or write (and by every later commit); reads are served from the log
    meanwhile.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval_ms: int = 10,
        checkpoint_every: int = 10_000,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        if fsync not in _POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(_POLICIES)}, not {fsync!r}")
        if fsync_interval_ms < 1 or checkpoint_every < 1 or segment_bytes < 1:
            raise ConfigError("fsync_interval_ms, checkpoint_every and segment_bytes must be >= 1")
        self.layout = Layout(Path(path))
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval_ms = fsync_interval_ms
        # From the Runtime's `Limits`, at open: events kept (0 keeps all; whole segments go at once), and how long
        # input keys are kept across restarts.
        self.event_retention = 0
        self.idempotency_ttl_s = 86_400.0
        self.checkpoint_every = checkpoint_every
        self._info = StoreInfo(kind="fs", path=str(self.layout.root), fsync=fsync)
        self._os_write = default_write  # the one place bytes reach a file; tests inject failures here
        self._fds = FdCache(_fd_budget())
        self._wal = EventLog(self.layout, segment_bytes, durable=fsync != "never")
        self._projections = Projections(self.layout, self._fds, self._write)
        self._io = threading.Lock()  # the writer thread, the flusher and close
        self._lock_fd: int | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._queue: list[_Pending] = []
        self._leading = False
        self._next_id = 1
        self._durable_id = 0
        self._since_checkpoint = 0
        self._dirty: dict[str, bytes] = {}  # Worker states changed since the last checkpoint
        # The content of every queued input, per Worker and run id, as of the log: written once, in its
        # input_accepted line, and into the Worker's queued.json by the checkpoints while its run is queued.
        self._contents: dict[str, dict[str, str]] = {}
        self._queued_dirty: set[str] = set()  # Workers whose queued inputs changed since the last checkpoint
        self._key_ops: list[InputKeyRecord | str] = []  # keys accepted, Workers deleted, since then
        self._proj_lock = threading.Lock()  # a delete's rmtree against the checkpoint's state writes
        self._job: _Checkpoint | None = None  # the checkpoint being written
        self._checkpointed_id = 0
        self._checkpoint_write = default_write  # how the checkpoint writes its files; tests inject failures here
        # The input keys as the checkpoints know them, per Worker (a delete drops its Worker's keys, not a scan),
        # oldest first in `_key_order` (expiry pops from the front). Touched by one checkpoint at a time only.
        self._keys: dict[str, dict[str, InputKeyRecord]] = {}
        self._key_order: deque[InputKeyRecord] = deque()
        self._keys_count = 0
        self._keys_lines = 0  # lines in input_keys.jsonl (the live keys plus what expired or was replaced)
        self._keys_size = 0  # its length in bytes up to the last whole line the store wrote
        self._keys_compact = True  # rewrite it whole at the next checkpoint (else append the new keys)
        self._unknown: str | None = None  # why the outcome of a write is unknown: no write until reopened
        self._refused = False  # the last write was refused (nothing of it on disk): until one succeeds
        # Workers whose files are behind the event log, with the batches not projected yet, in order: a big
        # group's (deferred on purpose, `_PROJECT_INLINE`) and those after a projection write that failed once its
        # line was durable (those Workers are in `_torn` too: their tails are repaired first, and every commit
        # tries them). Reads of them bring them up to date first, or are served from these batches; a checkpoint
        # never goes past the first.
        self._stale: dict[str, list[_Pending]] = {}
        self._torn: set[str] = set()
        self._catch_up_thread: threading.Thread | None = None
        self._stop_catch_up = False  # set by close (under the commit lock)
        self._upgraded: str | None = None
        self._unsynced = False
        # `batch`: each commit waits for the flusher's next fsync. `_written` counts commits, `_synced` the last
        # commit a flush covered; `_synced_cond` wakes the waiting commits.
        self._written = 0
        self._synced = 0
        self._synced_cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()

    @property
    def info(self) -> StoreInfo:
        return self._info

    @property
    def committed_id(self) -> int:
        """The newest event id the log has taken: a refused write leaves it where it was; a write whose outcome is
        unknown counts as taken (its ids may be on disk, so they are never handed out again)."""
        return self._next_id - 1

    @property
    def health(self) -> StoreHealth:
        """``outcome_unknown`` after a failed fsync (until reopened); ``cannot_write`` after a refused write until
        one succeeds, or while a Worker's files that failed to be written are behind the log; else ``ok`` (files
        behind the log on purpose, a big group's, are brought up to date by the catch-up thread)."""
        if self._unknown is not None:
            return "outcome_unknown"
        if self._refused or self._torn:
            return "cannot_write"
        return "ok"

    def _write(self, fd: int, data: bytes) -> None:
        self._os_write(fd, data)

    # --- open ------------------------------------------------------------------------------------------------

    async def open(self, runtime_id: str | None, display_name: str | None, *, limits: Limits) -> StoreState:
        if self._state != "new":
            raise ConfigError("an FsRuntimeStore opens once; create a new one")
        self.event_retention = limits.event_retention
        self.idempotency_ttl_s = limits.idempotency_ttl_s
        state = await anyio.to_thread.run_sync(self._open, runtime_id, display_name)
        self._state = "open"
        return state

    def _open(self, runtime_id: str | None, display_name: str | None) -> StoreState:
        layout = self.layout
        if runtime_id is not None and not is_valid_id(runtime_id):
            raise ConfigError(f"invalid runtime id {runtime_id!r}")
        try:
            fileops.mkdir(layout.root, parents=True)
            self._lock()
        except OSError as exc:
            raise ConfigError(f"cannot open the store at {layout.root}: {exc.strerror or exc}") from exc
        try:
            record = self._runtime_record(runtime_id, display_name)
            fileops.mkdir(layout.index)
            _check_writable(layout)
            loaded = load(
                layout, self._wal, self._projections, runtime_id=record.runtime_id, ttl=self.idempotency_ttl_s
            )
            self._next_id = self._wal.last_id + 1
            self._durable_id = self._wal.last_id
            self._dirty = loaded.dirty
            self._contents = loaded.queued
            self._queued_dirty = loaded.queued_dirty
            self._load_keys(loaded.keys.values(), rewrite=bool(loaded.replayed))
            for diagnostic in loaded.diagnostics:  # what recovery repaired goes to disk with the next checkpoint
                if diagnostic.worker_ref is not None and is_valid_id(diagnostic.worker_ref.worker_id):
                    self._projections.touched.add(diagnostic.worker_ref.worker_id)
            # A checkpoint at open only when the replay was long (or the store has none yet): a short replay
            # is left to the next checkpoint, which comes that much sooner, so a restart still replays at most
            # about twice `checkpoint_every` lines. Until then a crash replays the same lines again (recovery is
            # idempotent), and the log they come from is durable (`EventLog.open` fsynced its newest segment).
            self._checkpointed_id = loaded.checkpoint_id
            if loaded.replayed >= self.checkpoint_every or not layout.checkpoint.exists():
                self._checkpoint_now()
            else:
                self._since_checkpoint = loaded.replayed
        except OSError as exc:  # recovery could not write its repairs (a full disk, say) or read a file
            self._unlock()
            where = f"{exc.filename}: " if exc.filename else ""
            raise ConfigError(
                f"cannot open the store at {layout.root}: {where}{exc.strerror or exc}",
                details={"path": str(exc.filename or layout.root)},
            ) from None
        except BaseException:
            self._unlock()
            raise
        workers = list(loaded.workers.values())
        for wid in loaded.corrupt:
            if wid not in loaded.workers:  # its record is unreadable: a stand-in so that it answers store_corrupt
                workers.append(
                    WorkerRecord(
                        worker_id=wid,
                        profile="",
                        intent=AssistantIntent(),
                        profile_selector=RuntimeDefaultProfile(),
                        created_at=0.0,
                        updated_at=0.0,
                        status="stopped",
                    )
                )
        if self.fsync == "batch":
            self._flusher = threading.Thread(target=self._flush_loop, name="worker-runtime-fsync", daemon=True)
            self._flusher.start()
        return StoreState(
            runtime_id=record.runtime_id,
            display_name=record.display_name,
            created_at=record.created_at,
            last_event_id=self._wal.last_id,
            workers=workers,
            input_keys=list(loaded.keys.values()),
            diagnostics=loaded.diagnostics if self._upgraded is None else [self._upgrade_note(), *loaded.diagnostics],
            corrupt=loaded.corrupt,
            queued_content={run_id: c for contents in loaded.queued.values() for run_id, c in contents.items()},
        )

    def _upgrade_note(self) -> Diagnostic:
        return Diagnostic(
            level="info",
            code="store_upgraded",
            message=self._upgraded or "",
            path=str(self.layout.runtime_record),
            offset=None,
            worker_ref=None,
            created_at=format_time(now()),
        )

    def _lock(self) -> None:
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreLockedError(
                f"{self.layout.lock} is locked by another process"
                + (f" (pid {holder})" if holder else "")
                + ": one process owns a store"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _runtime_record(self, runtime_id: str | None, display_name: str | None) -> RuntimeRecord:
        path = self.layout.runtime_record
        try:
            record = read_record(path, RuntimeRecord)
        except RecordCorrupt as exc:
            raise StoreFormatError(f"{path} is unreadable: {exc.reason}") from None
        if record is None:
            rid = runtime_id or generate_id("rt")
            record = RuntimeRecord(
                format_version=FORMAT_VERSION, runtime_id=rid, display_name=display_name or rid, created_at=now()
            )
            write_atomic(path, encode(record), durable=self.fsync != "never")
            return record
        if record.format_version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{path} has format version {record.format_version}; this version reads up to {FORMAT_VERSION}"
            )
        if record.format_version < 1:
            raise StoreFormatError(
                f"{path} has format version {record.format_version}, which no version wrote; "
                "restore the store from a backup or use another store path"
            )
        if runtime_id is not None and runtime_id != record.runtime_id:
            raise StoreFormatError(
                f"{path} belongs to runtime {record.runtime_id!r}, not {runtime_id!r}; "
                "start without a runtime id to keep the stored one, or use another store path"
            )
        changed = False
        if record.format_version == 1:
            logs = upgrade_v1(self.layout, durable=self.fsync != "never")
            self._upgraded = f"upgraded the store from format version 1 to {FORMAT_VERSION} ({logs} logs rewritten)"
            logger.info("%s: %s", self.layout.root, self._upgraded)
            record.format_version = FORMAT_VERSION
            changed = True
        if display_name and display_name != record.display_name:
            record.display_name = display_name
            changed = True
        if changed:  # the version last: only once every log is upgraded
            write_atomic(path, encode(record), durable=self.fsync != "never")
        return record

    # --- writing: group commit -------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        if self._state != "open":
            raise RuntimeUnavailableError(f"the store at {self.layout.root} is {self._state}")
        if self._unknown is not None:
            raise _outcome_unknown(self._unknown)
        pending = _Pending(batch)  # encoded now: the worker record is live and changes after this
        self._queue.append(pending)
        while not pending.finished:
            if not self._leading:
                await self._lead(pending)
            else:
                assert pending.wake is not None  # only a finished pending has none
                await pending.wake.wait()
                if not pending.finished:
                    pending.wake = anyio.Event()
        # A pending the catch-up thread keeps (its projection deferred) needs no event once it is finished: three
        # objects fewer per batch for the collector to scan (2,000 run ends at start-up)
        pending.wake = None
        if pending.error is not None:
            raise pending.error

    async def write_many(self, batches: Sequence[Batch]) -> list[WorkerRuntimeError | None]:
        """Write `batches` in order as one group commit: for each, None once it is durable, or the error that
        refused it (the run ends of a start-up: one thread hop, one fsync, no task per batch)."""
        if self._state != "open":
            raise RuntimeUnavailableError(f"the store at {self.layout.root} is {self._state}")
        if self._unknown is not None:
            raise _outcome_unknown(self._unknown)
        pendings = [_Pending(batch) for batch in batches]  # encoded now, as `write` does
        if not pendings:
            return []
        wake = anyio.Event()  # one for all: a commit takes the whole queue, so they finish together
        for pending in pendings:
            pending.wake = wake
        self._queue.extend(pendings)
        last = pendings[-1]
        while not last.finished:
            if not self._leading:
                await self._lead(last)
            else:
                await wake.wait()
                if not last.finished:
                    wake = anyio.Event()
                    for pending in pendings:
                        if not pending.finished:
                            pending.wake = wake
        for pending in pendings:
            pending.wake = None
        return [pending.error for pending in pendings]

    async def _lead(self, me: _Pending) -> None:
        """Commit everything queued (one thread hop, one fsync), then hand the lead to whoever queued since."""
        self._leading = True
        try:
            while not me.finished:
                group, self._queue = self._queue, []
                error: WorkerRuntimeError | None = None
                try:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._commit, group)
                except WorkerRuntimeError as exc:
                    error = exc
                except Exception as exc:
                    logger.exception("the store failed to commit")
                    error = RuntimeUnavailableError(f"the store failed: {type(exc).__name__}: {exc}")
                for pending in group:
                    pending.finished = True
                    if error is not None:  # else it stays what the commit set (a create taken back, and after)
                        pending.error = error
                    if pending.wake is not None:  # always, until its writer has seen it finished
                        pending.wake.set()
        finally:
            self._leading = False
            if self._queue and (wake := self._queue[0].wake) is not None:
                wake.set()

    def _commit(self, group: list[_Pending]) -> None:
        written = self._commit_locked(group)
        if written:  # `batch`: acknowledged only once the flush that covers it is done
            with self._synced_cond:
                while self._synced < written and self._unknown is None:
                    self._synced_cond.wait()
            if self._synced < written:
                raise _outcome_unknown(self._unknown or "the store closed before the write was flushed")

    def _commit_locked(self, group: list[_Pending]) -> int:
        """Append and project `group`; under `batch`, the commit's number for the flush to cover, else 0.

        A create whose files cannot be made is taken back with every batch after it (their `error` is set); the
        batches before it stand.
        """
        with self._io:
            if self._unknown is not None:
                raise _outcome_unknown(self._unknown)
            expected = self._next_id
            for pending in group:
                if pending.event_id != expected:
                    raise RuntimeUnavailableError(
                        f"event {pending.event_id} does not follow the log (next is {self._next_id}): "
                        "an earlier write failed"
                    )
                expected += 1
            try:
                self._wal.append(self._fds, [(p.event_id, p.line) for p in group], self._write)
            except OSError as exc:
                path = self._wal.current.data if self._wal.current else self.layout.events
                if isinstance(exc, fileops.OutcomeUnknown) or exc.errno not in _REFUSED:
                    self._next_id = expected  # the lines may be on disk: their ids are never handed out again
                    raise self._went_unknown(f"appending to {path} failed ({exc.strerror or exc})") from exc
                self._refused = True
                raise RuntimeUnavailableError(f"cannot append to {path}: {exc.strerror or exc}") from exc
            self._next_id = expected
            written = 0
            if self.fsync == "always":
                self._fsync_log()
            elif self.fsync == "batch":
                self._unsynced = True
                self._written += 1
                written = self._written
            kept = len(group)
            defer = kept > _PROJECT_INLINE
            for i, pending in enumerate(group):
                if pending.created and pending.worker_id is not None and pending.state is not None:
                    try:
                        self._projections.create(pending.worker_id, pending.event_id, pending.state)
                    except OSError as exc:
                        kept = i
                        self._take_back(group[i:], exc)
                        break
                self._project(pending, defer)
            self._durable_id = self._next_id - 1
            if kept == len(group):
                self._refused = False
            if self._torn:
                self._catch_up(self._torn)
            if self._stale and not self._torn:
                self._start_catch_up()
            self._since_checkpoint += kept
            if self._job is not None and self._job.done.is_set():
                self._finish_checkpoint()
            if self._since_checkpoint >= self.checkpoint_every:
                if self._job is not None:  # the last one is still writing: wait for it, so replay stays bounded
                    self._job.done.wait()
                    self._finish_checkpoint()
                job = self._take_checkpoint()
                threading.Thread(
                    target=self._checkpoint_thread, args=(job,), name="worker-runtime-checkpoint", daemon=True
                ).start()
            return written

    def _take_back(self, refused: list[_Pending], exc: OSError) -> None:
        """A create's files could not be made after its line was logged: cut the log back to before it, so that
        neither the create nor the batches after it exist (now or after a restart), and refuse them."""
        first = refused[0]
        cause = f"cannot create the files of worker {first.worker_id!r} ({exc.strerror or exc})"
        error: RuntimeUnavailableError
        try:
            self._wal.cut_back(self._fds, first.event_id)
        except OSError as cut:
            error = self._went_unknown(f"{cause}, and taking its log line back failed ({cut.strerror or cut})")
        else:
            self._next_id = first.event_id
            self._refused = True
            error = RuntimeUnavailableError(f"{cause}; the create was taken back")
            logger.error("%s", error.message)
        for pending in refused:
            pending.error = error

    def _went_unknown(self, cause: str) -> RuntimeUnavailableError:
        """A write's outcome is unknown: refuse every write from now on (until the store is reopened)."""
        if self._unknown is None:
            self._unknown = f"{cause}; the outcome is unknown: no write until the store is reopened (restart)"
            logger.error("the store at %s: %s", self.layout.root, self._unknown)
        return _outcome_unknown(self._unknown)

    def _fsync_log(self) -> None:
        current = self._wal.current
        if current is None:
            return
        try:
            fileops.fsync(self._fds.get(current.data_name))
        except OSError as exc:
            # The kernel may have dropped the pages it could not write, and a later fsync would not say so: the
            # page cache can no longer be trusted. Refuse writes until the log is reopened and re-verified.
            raise self._went_unknown(f"fsync of {current.data} failed ({exc.strerror or exc})") from exc

    def _project(self, pending: _Pending, defer: bool = False) -> None:
        """Project one logged batch (a create's files are made before), or with `defer` leave it to the catch-up
        thread. A failure leaves the Worker's files behind the log (`_stale`, `_torn`), never the batch refused:
        the log has it."""
        wid = pending.worker_id
        if pending.input_key is not None:
            self._key_ops.append(pending.input_key)
        if wid is None:
            return
        contents = self._contents.get(wid)
        if pending.queued is not None and pending.run_id is not None:
            if contents is None:
                contents = self._contents[wid] = {}
            contents[pending.run_id] = pending.queued
            self._queued_dirty.add(wid)
        elif contents is not None and pending.run_id in contents:  # the run starts, or ends without starting
            del contents[pending.run_id]
            if not contents:
                del self._contents[wid]
            self._queued_dirty.add(wid)
        if pending.delete:
            self._key_ops.append(wid)
            self._contents.pop(wid, None)
            self._queued_dirty.discard(wid)
            was_stale = wid in self._stale
            if was_stale:  # its events stay readable by worker id: index the missing ones if it can
                self._catch_up_worker(wid)
                self._stale.pop(wid, None)
                self._torn.discard(wid)
            with self._proj_lock:  # the checkpoint must not write its state into the directory going away
                if self._job is not None:
                    self._job.dirty.pop(wid, None)
                    self._job.queued.pop(wid, None)
                try:
                    self._projections.apply(wid, pending.event_id, delete=True, check=was_stale)
                except OSError as exc:
                    logger.warning("indexing the deletion of worker %r failed: %s", wid, exc.strerror or exc)
            self._dirty.pop(wid, None)
            return
        if not pending.created:
            stale = self._stale.get(wid)
            if stale is not None:
                stale.append(pending)
                if not defer:
                    self._catch_up_worker(wid)
            elif defer:
                self._stale[wid] = [pending]
            else:
                try:
                    self._projections.apply(wid, pending.event_id, entry=pending.entry, run=pending.run)
                except OSError as exc:
                    self._stale[wid] = [pending]
                    self._torn.add(wid)
                    logger.warning(
                        "cannot update the files of worker %r (%s): they are brought up to date from the event "
                        "log once the disk allows; reads are served from the log meanwhile",
                        wid,
                        exc.strerror or exc,
                    )
        if pending.state is not None and not pending.created:  # a new Worker's state is its worker.json
            self._dirty[wid] = pending.state

    def _catch_up_worker(self, wid: str) -> bool:
        """Project what the files of `wid` miss (under the commit lock); True once they are up to date."""
        stale = self._stale.get(wid)
        if stale is None:
            return True
        torn = wid in self._torn
        try:
            if torn:  # a failed write may have left part of a line or of an index record
                self._projections.repair_tails(wid)
            while stale:
                pending = stale[0]
                self._projections.apply(wid, pending.event_id, entry=pending.entry, run=pending.run, check=True)
                del stale[0]
        except (OSError, RecordCorrupt) as exc:
            if not torn:
                self._torn.add(wid)
                logger.warning(
                    "cannot update the files of worker %r (%s): they are brought up to date from the event log "
                    "once the disk allows; reads are served from the log meanwhile",
                    wid,
                    getattr(exc, "strerror", None) or exc,
                )
            else:
                logger.debug("the files of worker %r are still behind the log: %s", wid, exc)
            return False
        del self._stale[wid]
        if torn:
            self._torn.discard(wid)
            logger.info("the files of worker %r are up to date with the event log again", wid)
        return True

    def _catch_up(self, workers: Iterable[str] | None = None, limit: int | None = None) -> bool:
        """Bring `workers` (every Worker whose files are behind, by default) up to date, at most `limit` of them,
        up to the first that still fails (the disk is still full). Under the commit lock; False on a failure."""
        for wid in list(self._stale if workers is None else workers)[:limit]:
            if not self._catch_up_worker(wid):
                return False
        return True

    def _start_catch_up(self) -> None:
        """Start the catch-up thread unless it runs. Under the commit lock."""
        thread = self._catch_up_thread
        if thread is None or not thread.is_alive():
            thread = self._catch_up_thread = threading.Thread(
                target=self._catch_up_loop, name="worker-runtime-catch-up", daemon=True
            )
            thread.start()

    def _catch_up_loop(self) -> None:
        """Bring the files behind the log up to date, a slice of Workers per hold of the commit lock, until none
        is behind, one fails (then every commit tries it, as after any failed projection) or the store closes."""
        while True:
            with self._io:
                if (
                    self._stop_catch_up
                    or self._unknown is not None
                    or not self._stale
                    or not self._catch_up(limit=_CATCH_UP_SLICE)
                ):
                    if self._catch_up_thread is threading.current_thread():
                        self._catch_up_thread = None
                    return
            time.sleep(0)  # let a commit waiting for the lock take it

    # --- checkpoints -----------------------------------------------------------------------------------------
    #
    # The writer hands over what changed since the last checkpoint in O(1) under the commit lock
    # (`_take_checkpoint`) and a background thread writes it (`_write_checkpoint`): the dirty Worker states, the
    # new input keys (appended to input_keys.jsonl; the file is rewritten only after a delete or once it holds
    # mostly dead keys), an fsync of exactly the files written since the last checkpoint, and last the
    # checkpoint record. Until that record moves, a restart replays the log from the previous one, which redoes
    # all of it, so a crash at any point loses nothing. The writer collects the outcome under the commit lock
    # (`_finish_checkpoint`): retention after a success; after a failure it takes the work back for the next one.

    def _take_checkpoint(self) -> _Checkpoint:
        """Hand over what the next checkpoint writes. Under the commit lock (or before the store serves)."""
        segments: list[str] = []
        if self.fsync == "batch":  # the log up to this id must be on disk before the checkpoint says so
            firsts = self._wal.firsts
            start = max(0, bisect.bisect_right(firsts, self._checkpointed_id + 1) - 1)
            for first in firsts[start:]:
                if first <= self._durable_id:
                    log = self._wal.logs[first]
                    segments += [log.data_name, log.index_name]
        touched, self._projections.touched = self._projections.touched, set()
        upto = self._durable_id
        if self._stale:  # never past a batch some Worker's files miss: a restart must still replay it
            upto = min(upto, min(stale[0].event_id for stale in self._stale.values()) - 1)
        contents = self._contents
        queued = {wid: dict(contents.get(wid, ())) for wid in self._queued_dirty}
        job = _Checkpoint(upto, self._dirty, self._key_ops, touched, segments, queued)
        self._dirty = {}
        self._queued_dirty = set()
        self._key_ops = []
        self._since_checkpoint = 0
        self._job = job
        return job

    def _checkpoint_thread(self, job: _Checkpoint) -> None:
        try:
            self._write_checkpoint(job)
        except BaseException as exc:  # collected by the writer, which logs it and retries with the next one
            job.error = exc
        finally:
            job.done.set()

    def _finish_checkpoint(self) -> None:
        """Collect the finished checkpoint. Under the commit lock."""
        job, self._job = self._job, None
        if job is None:
            return
        if job.error is None:
            self._checkpointed_id = job.event_id
            if self.event_retention:
                keep_from = min(job.event_id + 1, self._wal.last_id - self.event_retention + 1)
                self._wal.drop_before(keep_from, self._fds)
            return
        if isinstance(job.error, fileops.OutcomeUnknown):
            # A later fsync of the same files could succeed although what this one covered was lost, and the
            # checkpoint would then say it is on disk: stop writing until a restart replays the log.
            self._went_unknown(f"the checkpoint's {job.error.strerror}")
        # Else not fatal: the log has everything since the last checkpoint; the next one writes this one's too.
        logger.warning("checkpoint of %s failed: %s", self.layout.root, job.error)
        for wid, state in job.dirty.items():
            self._dirty.setdefault(wid, state)  # a newer state of the same Worker wins
        self._queued_dirty.update(job.queued)  # written from the live contents next time
        self._key_ops[:0] = job.key_ops  # in log order, before what came since
        self._projections.touched |= job.touched
        self._keys_compact = True  # the key file may hold part of an append: rewrite it whole

    def _wait_checkpoint(self) -> None:
        """Wait until the checkpoint being written (if any) is on disk (tests and tools)."""
        job = self._job
        if job is not None:
            job.done.wait()

    def _checkpoint_now(self) -> None:
        """A checkpoint written in this thread (open and close: nothing else is writing)."""
        if self._job is not None:
            self._job.done.wait()
            self._finish_checkpoint()
        job = self._take_checkpoint()
        self._checkpoint_thread(job)
        self._finish_checkpoint()
        if job.error is not None:
            raise job.error

    def _write_checkpoint(self, job: _Checkpoint) -> None:
        durable = self.fsync != "never"
        with self._proj_lock:
            states = list(job.dirty)
            queued = list(job.queued)
        for wid in states:
            with self._proj_lock:
                state = job.dirty.get(wid)
                directory = self.layout.worker_dir(wid)
                if state is not None and directory.is_dir():
                    # fsynced below with the Worker's files
                    write_atomic(directory / "state.json", state, durable=False, write=self._checkpoint_write)
        for wid in queued:
            with self._proj_lock:
                contents = job.queued.get(wid)
                directory = self.layout.worker_dir(wid)
                if contents is not None and directory.is_dir():  # fsynced below with the Worker's files
                    if contents:
                        write_atomic(
                            directory / "queued.json", encode(contents), durable=False, write=self._checkpoint_write
                        )
                    else:
                        fileops.unlink(directory / "queued.json")
        self._write_keys(job.key_ops, durable)
        if durable:
            workers = job.touched.union(states, queued)
            if len(workers) * _FILES_PER_WORKER + len(job.segments) >= _SYNC_ALL_AT:
                # Thousands of fsyncs one after another take seconds; one sync(2) does it all. No list of the
                # paths then: building it for 10,000 new Workers holds the interpreter for about 0.2 s, which the
                # commits and the event loop wait for.
                fileops.sync()
            else:
                paths = []
                for wid in sorted(workers):
                    files = worker_files(self.layout, wid)
                    if wid in job.queued:  # before the directory, whose fsync makes its rename (or unlink) durable
                        files.insert(-1, str(self.layout.worker_dir(wid) / "queued.json"))
                    paths += files
                paths += job.segments
                for path in paths:
                    _fsync_path(path)
                for directory in (self.layout.workers, self.layout.index, self.layout.root):
                    fileops.fsync_dir(directory)
        record = CheckpointRecord(event_id=job.event_id, created_at=now())
        write_atomic(self.layout.checkpoint, encode(record), durable=durable)

    def _load_keys(self, keys: Iterable[InputKeyRecord], *, rewrite: bool) -> None:
        """The keys recovery found; `rewrite` when the key file does not hold them all (the log added some)."""
        for record in sorted(keys, key=lambda k: k.created_at):
            self._keys.setdefault(record.worker_id, {})[record.input_id] = record
            self._key_order.append(record)
        self._keys_count = self._keys_lines = len(self._key_order)
        try:
            with open(self.layout.input_keys, "rb") as f:
                self._keys_size = f.seek(0, os.SEEK_END)
                whole = self._keys_size == 0 or (f.seek(-1, os.SEEK_END) >= 0 and f.read(1) == b"\n")
        except FileNotFoundError:
            self._keys_size, whole = 0, True
        self._keys_compact = rewrite or not whole

    def _write_keys(self, ops: list[InputKeyRecord | str], durable: bool) -> None:
        """Apply the key changes since the last checkpoint and bring input_keys.jsonl up to date with them."""
        keys = self._keys
        added: list[InputKeyRecord] = []
        for op in ops:
            if isinstance(op, str):  # a deleted Worker: its keys go, and the file must lose them too
                gone = keys.pop(op, None)
                if gone:
                    self._keys_count -= len(gone)
                    self._keys_compact = True
                continue
            per = keys.get(op.worker_id)
            if per is None:
                per = keys[op.worker_id] = {}
            if op.input_id not in per:
                self._keys_count += 1
            per[op.input_id] = op
            self._key_order.append(op)
            added.append(op)
        horizon = now() - self.idempotency_ttl_s
        order = self._key_order
        while order and order[0].created_at <= horizon:  # expired: O(expired), never a scan of every key
            old = order.popleft()
            per = keys.get(old.worker_id)
            if per is not None and per.get(old.input_id) is old:
                del per[old.input_id]
                self._keys_count -= 1
                if not per:
                    del keys[old.worker_id]
        path = self.layout.input_keys
        if self._keys_compact or self._keys_lines + len(added) > 2 * self._keys_count + 10_000:
            live = (record for per in keys.values() for record in per.values())
            chunks = iter(lambda: _LINES.encode_lines(list(itertools.islice(live, _KEY_CHUNK))), b"")
            self._keys_size = write_atomic(path, chunks, durable=durable, write=self._checkpoint_write)
            self._keys_lines = self._keys_count
            self._keys_compact = False
            return
        if not added:
            return
        data = _LINES.encode_lines(added)
        fd = fileops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, self._keys_size)  # whole lines only, whatever an earlier failed append left
            try:
                self._checkpoint_write(fd, data)
                if durable:
                    fileops.fsync(fd)
            except OSError:
                os.ftruncate(fd, self._keys_size)
                raise
        finally:
            fileops.close(fd)
        self._keys_size += len(data)
        self._keys_lines += len(added)

    def _flush_loop(self) -> None:
        interval = self.fsync_interval_ms / 1000
        while not self._stop_flusher.wait(interval):
            if self._unsynced:
                with self._io:
                    if self._unsynced and self._unknown is None:
                        self._unsynced = False
                        written = self._written
                        try:
                            self._fsync_log()
                        except RuntimeUnavailableError:
                            pass  # logged; the commits waiting for this flush are answered "outcome unknown"
                        self._flushed(written)

    def _flushed(self, written: int) -> None:
        """Commits up to `written` are durable (or, with `_unknown` set, never will be): wake their callers."""
        with self._synced_cond:
            if self._unknown is None:
                self._synced = max(self._synced, written)
            self._synced_cond.notify_all()

    # --- reading ---------------------------------------------------------------------------------------------

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        return await anyio.to_thread.run_sync(self._read_transcript, worker_id, start, limit)

    def _read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        log = self._projections.transcript(worker_id)
        if worker_id in self._stale:
            with self._io:  # its files are behind the log: bring them up to date, or read the rest from memory
                if not self._catch_up_worker(worker_id):
                    return self._read_stale_transcript(worker_id, log, start, limit)
        try:
            try:
                return _PAGE_DECODER.decode(log.read_array(start, limit))
            except (msgspec.DecodeError, msgspec.ValidationError):  # find the line, for its offset
                lines = log.read(start, limit)
                return [_decode(_ENTRY_DECODER, line, log.data, offset) for _, offset, line in lines]
        except FileNotFoundError:
            return []
        except RecordCorrupt as exc:
            raise _corrupt(exc) from None

    def _read_stale_transcript(self, worker_id: str, log: IndexedLog, start: int, limit: int) -> list[TranscriptRecord]:
        """Entries `start` to `start + limit` from the file as far as it goes, then from the batches it misses.
        Under the commit lock."""
        try:
            count = log.count()
            out = [
                _decode(_ENTRY_DECODER, line, log.data, offset)
                for _, offset, line in log.read(start, min(limit, count - start))
            ]
        except FileNotFoundError:
            out = []
        except RecordCorrupt as exc:
            raise _corrupt(exc) from None
        for pending in self._stale.get(worker_id, ()):
            if len(out) >= limit:
                break
            if pending.entry is not None and pending.entry[0] == start + len(out):
                out.append(_ENTRY_DECODER.decode(unframe(pending.entry[1]) or b""))
        return out

    async def read_events(self, after: int, limit: int, worker_id: str | None = None) -> list[EventRecord]:
        return await anyio.to_thread.run_sync(self._read_events, after, limit, worker_id)

    def _read_events(self, after: int, limit: int, worker_id: str | None) -> list[EventRecord]:
        durable = self._durable_id
        first = self._wal.first_id
        if after < first - 1:
            raise CursorExpiredError(
                f"events up to {first - 1} are no longer kept; resume from after={first - 1}",
                details={"oldest_id": first},
            )
        try:
            if worker_id is None:
                found = self._wal.read(after, limit, durable)
            else:
                index = self._projections.event_index(worker_id)
                position = index.bisect(max(after, first - 1))
                ids = index.ids(position, limit)
                if worker_id in self._stale:
                    with self._io:  # its index is behind the log: bring it up to date, or add what it misses
                        caught_up = self._catch_up_worker(worker_id)
                        ids = index.ids(position, limit)
                        if not caught_up:
                            floor = max(after, first - 1, ids[-1] if ids else index.last())
                            missed = [p.event_id for p in self._stale.get(worker_id, ()) if p.event_id > floor]
                            ids = (ids + missed)[:limit]
                found = []
                for event_id in ids:
                    if event_id > durable:
                        break
                    one = self._wal.read_one(event_id)
                    if one is not None:
                        found.append(one)
            events = []
            for _, offset, line, log in found:
                try:
                    events.append(decode_event(line))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise _corrupt(RecordCorrupt(log.data, offset, f"unreadable event: {exc}")) from None
            return events
        except (FileNotFoundError, KeyError):  # a segment dropped by retention while we read
            raise CursorExpiredError(
                "the events asked for were dropped while reading", details={"oldest_id": self._wal.first_id}
            ) from None
        except RecordCorrupt as exc:
            raise _corrupt(exc) from None

    async def read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        return await anyio.to_thread.run_sync(self._read_run, worker_id, run_id)

    def _read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        number = run_number(run_id)
        if number is None:
            return None
        if worker_id in self._stale:
            with self._io:  # its files are behind the log: bring them up to date, or look in what they miss
                if not self._catch_up_worker(worker_id):
                    for pending in self._stale.get(worker_id, ()):
                        if pending.run is not None and pending.run[0] == number:
                            return _RUN_DECODER.decode(unframe(pending.run[1]) or b"")
        log = self._projections.runs(worker_id)
        try:
            position = log.find_unordered(number)  # runs may end out of acceptance order (queued ones)
            if position < 0:
                return None
            [(_, offset, line)] = log.read(position, 1)
            return _decode(_RUN_DECODER, line, log.data, offset)
        except FileNotFoundError:
            return None
        except RecordCorrupt as exc:
            raise _corrupt(exc) from None

    # --- closing ---------------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._io:
            self._stop_catch_up = True
            catching_up = self._catch_up_thread
        if catching_up is not None:
            catching_up.join()
        with self._io:
            try:
                if self._job is not None:
                    self._job.done.wait()
                    self._finish_checkpoint()
                if self._unknown is None:
                    if self.fsync != "never":
                        self._fsync_log()
                        self._flushed(self._written)
                    self._catch_up()
                    self._checkpoint_now()
            except (OSError, RuntimeUnavailableError) as exc:
                logger.warning("closing the store at %s: %s", self.layout.root, exc)
            finally:
                self._flushed(0)  # a commit still waiting (the fsync failed) gets its answer
                self._fds.close()
                self._unlock()


def _decode(decoder: msgspec.json.Decoder[T], line: bytes, path: Path, offset: int) -> T:
    try:
        return decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordCorrupt(path, offset, f"unreadable line: {exc}") from None


def _check_writable(layout: Layout) -> None:
    """Refuse to open a store one of whose directories cannot take a new file (a read-only mount, no permission):
    the first write would fail there, perhaps only after some input was acknowledged.

    Raises:
        StoreUnwritableError: naming the directory.
    """
    for directory in (layout.events, layout.workers, layout.index):
        try:
            fileops.mkdir(directory)
            _probe(directory)
        except OSError as exc:
            raise StoreUnwritableError(
                f"cannot write in {directory}: {exc.strerror or exc}", details={"path": str(directory)}
            ) from None


def _probe(directory: Path) -> None:
    """Create a file in `directory` that leaves no trace: unnamed (``O_TMPFILE``) where the file system can, else
    a named one removed at once."""
    if hasattr(os, "O_TMPFILE"):
        try:
            os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    probe = directory / f".write-probe-{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.unlink(probe)


def _fsync_path(path: str) -> None:
    """fsync a file, or a directory's entries, by path; one that is gone (a deleted Worker's) needs nothing."""
    try:
        if os.path.isdir(path):
            fileops.fsync_dir(path)
            return
        fd = fileops.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fileops.fsync(fd)
    finally:
        fileops.close(fd)


def _fd_budget() -> int:
    """Append descriptors to keep open: a quarter of the soft limit, between 64 and 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft // 4))


def _corrupt(exc: RecordCorrupt) -> StoreCorruptError:
    return StoreCorruptError(
        f"{exc.path} at byte {exc.offset}: {exc.reason}", details={"path": str(exc.path), "offset": exc.offset}
    )


def _outcome_unknown(cause: str) -> RuntimeUnavailableError:
    return RuntimeUnavailableError(cause, details={"outcome": "unknown"})
