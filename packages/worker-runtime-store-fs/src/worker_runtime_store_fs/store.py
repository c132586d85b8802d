"""`FsRuntimeStore`: durable, crash-safe persistence of a Runtime on the local disk."""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import threading
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
import msgspec

from worker_runtime_core import (
    AssistantIntent,
    ConfigError,
    CursorExpiredError,
    RuntimeDefaultProfile,
    RuntimeUnavailableError,
    StoreCorruptError,
    StoreInfo,
    WorkerRuntimeError,
    generate_id,
    is_valid_id,
)
from worker_runtime_core._times import now
from worker_runtime_core.records import EventRecord, InputKeyRecord, RunRecord, TranscriptRecord, WorkerRecord
from worker_runtime_core.stores import Batch, StoreState

from .errors import StoreFormatError, StoreLockedError
from .eventlog import SEGMENT_BYTES, EventLog
from .layout import FORMAT_VERSION, Layout
from .lines import CheckpointRecord, RuntimeRecord, WalLineOut, decode_event, encode
from .logs import FdCache
from .projections import Projections, default_write, run_number
from .records import RecordCorrupt, read_record, write_atomic
from .recovery import load

__all__ = ["FsyncPolicy", "FsRuntimeStore"]

logger = logging.getLogger("worker_runtime_store_fs")

FsyncPolicy = Literal["always", "batch", "never"]
_POLICIES = ("always", "batch", "never")
T = TypeVar("T")
_ENTRY_DECODER = msgspec.json.Decoder(TranscriptRecord)
_RUN_DECODER = msgspec.json.Decoder(RunRecord)


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
        "run",
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
        self.line = (
            encode(
                WalLineOut(
                    event=event,
                    worker=msgspec.Raw(self.state) if self.state is not None else None,
                    entry=batch.entry,
                    ended_run=batch.ended_run,
                    input_key=batch.input_key,
                    delete_worker=batch.delete_worker,
                )
            )
            + b"\n"
        )
        self.entry = (batch.entry.sequence, encode(batch.entry) + b"\n") if batch.entry is not None else None
        self.run: tuple[int, bytes] | None = None
        if batch.ended_run is not None:
            number = run_number(batch.ended_run.run_id)
            if number is not None:
                self.run = (number, encode(batch.ended_run) + b"\n")
        self.finished = False
        self.error: WorkerRuntimeError | None = None
        self.wake = anyio.Event()


class FsRuntimeStore:
    """Persists a Runtime under one root directory; pass it as ``Runtime(store=FsRuntimeStore(path))``.

    Args:
        path: the root directory (created when missing).
        fsync: ``always`` (default): a batch is acknowledged once its log line is fsynced, and concurrent
            batches share one fsync (group commit). ``batch``: fsync at most every `fsync_interval_ms`; a power
            loss may lose that last interval of acknowledged work. ``never``: the OS decides; a power loss may
            lose any recent work (a process crash loses nothing). For tests and benchmarks.
        fsync_interval_ms: the interval of the ``batch`` policy.
        event_retention: keep at least this many newest events (0 keeps all); whole segments go at once.
        idempotency_ttl_s: how long input keys are kept across restarts.
        checkpoint_every: events between checkpoints; a restart replays at most this many log lines.
        segment_bytes: size at which the event log starts a new segment.

    Raises (from `Runtime.start`): `StoreLockedError` when another process owns the root, `StoreFormatError` when
    the root belongs to another runtime id, is of a newer format or its runtime record is unreadable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval_ms: int = 10,
        event_retention: int = 0,
        idempotency_ttl_s: float = 86_400.0,
        checkpoint_every: int = 10_000,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        if fsync not in _POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(_POLICIES)}, not {fsync!r}")
        if fsync_interval_ms < 1 or event_retention < 0 or checkpoint_every < 1 or segment_bytes < 1:
            raise ConfigError(
                "fsync_interval_ms, checkpoint_every and segment_bytes must be >= 1, event_retention >= 0"
            )
        self.layout = Layout(Path(path))
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval_ms = fsync_interval_ms
        self.event_retention = event_retention
        self.idempotency_ttl_s = idempotency_ttl_s
        self.checkpoint_every = checkpoint_every
        self._info = StoreInfo(kind="fs", path=str(self.layout.root), fsync=fsync)
        self._os_write = default_write  # the one place bytes reach a file; tests inject failures here
        self._fds = FdCache(_fd_budget())
        self._wal = EventLog(self.layout, segment_bytes)
        self._projections = Projections(self.layout, self._fds, self._write)
        self._io = threading.Lock()  # the writer thread, the flusher and close
        self._lock_fd: int | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._queue: list[_Pending] = []
        self._leading = False
        self._next_id = 1
        self._durable_id = 0
        self._since_checkpoint = 0
        self._dirty: dict[str, bytes] = {}
        self._keys: dict[tuple[str, str], InputKeyRecord] = {}
        self._broken: str | None = None
        self._unsynced = False
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()

    @property
    def info(self) -> StoreInfo:
        return self._info

    @property
    def committed_id(self) -> int:
        """The newest event id the log has taken (a failed write leaves it where it was)."""
        return self._next_id - 1

    def _write(self, fd: int, data: bytes) -> None:
        self._os_write(fd, data)

    # --- open ------------------------------------------------------------------------------------------------

    async def open(self, runtime_id: str | None, display_name: str | None) -> StoreState:
        if self._state != "new":
            raise ConfigError("an FsRuntimeStore opens once; create a new one")
        state = await anyio.to_thread.run_sync(self._open, runtime_id, display_name)
        self._state = "open"
        return state

    def _open(self, runtime_id: str | None, display_name: str | None) -> StoreState:
        layout = self.layout
        if runtime_id is not None and not is_valid_id(runtime_id):
            raise ConfigError(f"invalid runtime id {runtime_id!r}")
        try:
            layout.root.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise ConfigError(f"cannot open the store at {layout.root}: {exc.strerror or exc}") from exc
        try:
            record = self._runtime_record(runtime_id, display_name)
            layout.index.mkdir(exist_ok=True)
            loaded = load(
                layout, self._wal, self._projections, runtime_id=record.runtime_id, ttl=self.idempotency_ttl_s
            )
            self._next_id = self._wal.last_id + 1
            self._durable_id = self._wal.last_id
            self._dirty = loaded.dirty
            self._keys = loaded.keys
            if loaded.replayed or not layout.checkpoint.exists():
                self._checkpoint()
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
            input_keys=list(self._keys.values()),
            diagnostics=loaded.diagnostics,
            corrupt=loaded.corrupt,
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
        if runtime_id is not None and runtime_id != record.runtime_id:
            raise StoreFormatError(
                f"{path} belongs to runtime {record.runtime_id!r}, not {runtime_id!r}; "
                "start without a runtime id to keep the stored one, or use another store path"
            )
        if display_name and display_name != record.display_name:
            record.display_name = display_name
            write_atomic(path, encode(record), durable=self.fsync != "never")
        return record

    # --- writing: group commit -------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        if self._state != "open":
            raise RuntimeUnavailableError(f"the store at {self.layout.root} is {self._state}")
        pending = _Pending(batch)  # encoded now: the worker record is live and changes after this
        self._queue.append(pending)
        while not pending.finished:
            if not self._leading:
                await self._lead(pending)
            else:
                await pending.wake.wait()
                if not pending.finished:
                    pending.wake = anyio.Event()
        if pending.error is not None:
            raise pending.error

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
                    pending.error = error
                    pending.wake.set()
        finally:
            self._leading = False
            if self._queue:
                self._queue[0].wake.set()

    def _commit(self, group: list[_Pending]) -> None:
        with self._io:
            if self._broken is not None:
                raise RuntimeUnavailableError(self._broken)
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
                raise RuntimeUnavailableError(f"cannot append to {path}: {exc.strerror or exc}") from exc
            if self.fsync == "always":
                self._fsync_log()
            elif self.fsync == "batch":
                self._unsynced = True
            self._next_id = expected
            for pending in group:
                self._project(pending)
            self._durable_id = expected - 1
            self._since_checkpoint += len(group)
            if self._since_checkpoint >= self.checkpoint_every:
                try:
                    self._checkpoint()
                except OSError as exc:  # not fatal: the log has everything; the next checkpoint retries
                    logger.warning("checkpoint of %s failed: %s", self.layout.root, exc)

    def _fsync_log(self) -> None:
        current = self._wal.current
        if current is None:
            return
        try:
            os.fsync(self._fds.get(str(current.data)))
        except OSError as exc:
            # After a failed fsync the page cache can no longer be trusted: refuse writes until a restart.
            self._broken = f"fsync of {current.data} failed ({exc.strerror or exc}); restart the Runtime"
            raise RuntimeUnavailableError(self._broken) from exc

    def _project(self, pending: _Pending) -> None:
        wid = pending.worker_id
        if pending.input_key is not None:
            record = pending.input_key
            self._keys[(record.worker_id, record.input_id)] = record
        if wid is None:
            return
        try:
            self._projections.apply(
                wid,
                pending.event_id,
                created=pending.state if pending.created else None,
                entry=pending.entry,
                run=pending.run,
                delete=pending.delete,
            )
        except OSError as exc:
            # The log line is durable, so the batch stands and a restart re-projects it; until then reads of this
            # worker could miss it, so refuse further writes.
            self._broken = f"cannot update the files of worker {wid!r} ({exc.strerror or exc}); restart the Runtime"
            logger.error("%s", self._broken)
            return
        if pending.delete:
            self._dirty.pop(wid, None)
            for key in [k for k in self._keys if k[0] == wid]:
                del self._keys[key]
        elif pending.state is not None:
            self._dirty[wid] = pending.state

    def _checkpoint(self) -> None:
        """Write dirty worker states and the live input keys, flush everything, then move the checkpoint."""
        durable = self.fsync != "never"
        for wid, state in self._dirty.items():
            directory = self.layout.worker_dir(wid)
            if directory.is_dir():
                write_atomic(directory / "state.json", state, durable=False)
        horizon = now() - self.idempotency_ttl_s
        self._keys = {k: v for k, v in self._keys.items() if v.created_at > horizon}
        write_atomic(self.layout.input_keys, b"".join(encode(k) + b"\n" for k in self._keys.values()), durable=False)
        if durable:
            os.sync()  # the projections written since the last checkpoint, all at once
        record = CheckpointRecord(event_id=self._durable_id, created_at=now())
        write_atomic(self.layout.checkpoint, encode(record), durable=durable)
        self._dirty = {}
        self._since_checkpoint = 0
        if self.event_retention:
            keep_from = min(self._durable_id + 1, self._wal.last_id - self.event_retention + 1)
            self._wal.drop_before(keep_from, self._fds)

    def _flush_loop(self) -> None:
        interval = self.fsync_interval_ms / 1000
        while not self._stop_flusher.wait(interval):
            if self._unsynced:
                with self._io:
                    if self._unsynced and self._broken is None:
                        self._unsynced = False
                        try:
                            self._fsync_log()
                        except RuntimeUnavailableError:
                            logger.error("%s", self._broken)

    # --- reading ---------------------------------------------------------------------------------------------

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        return await anyio.to_thread.run_sync(self._read_transcript, worker_id, start, limit)

    def _read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        log = self._projections.transcript(worker_id)
        try:
            lines = log.read(start, limit)
            return [_decode(_ENTRY_DECODER, line, log.data, offset) for _, offset, line in lines]
        except FileNotFoundError:
            return []
        except RecordCorrupt as exc:
            raise _corrupt(exc) from None

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
                found = []
                for event_id in index.ids(position, limit):
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
        log = self._projections.runs(worker_id)
        try:
            position = log.find(number)
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
            try:
                if self._broken is None:
                    if self.fsync != "never":
                        self._fsync_log()
                    self._checkpoint()
            except (OSError, RuntimeUnavailableError) as exc:
                logger.warning("closing the store at %s: %s", self.layout.root, exc)
            finally:
                self._fds.close()
                self._unlock()


def _decode(decoder: msgspec.json.Decoder[T], line: bytes, path: Path, offset: int) -> T:
    try:
        return decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordCorrupt(path, offset, f"unreadable line: {exc}") from None


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
