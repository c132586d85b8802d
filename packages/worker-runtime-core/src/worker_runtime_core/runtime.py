"""The `Runtime`: Workers, single-flight runs, cancel and stop, transcripts and the event log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup

from ._times import format_time, now
from ._version import __version__
from .config import DEFAULT_PROFILE, Limits, ProfileConfig
from .engines.base import Engine, RunContext
from .engines.registry import discover_engines
from .errors import (
    CapacityExceededError,
    ConfigError,
    EngineError,
    IdempotencyConflictError,
    InternalError,
    InvalidInputError,
    InvalidRequestError,
    InvalidWorkerIdError,
    LimitTooLargeError,
    OperationTimeoutError,
    RunNotFoundError,
    RuntimeUnavailableError,
    StoreCorruptError,
    UnknownProfileError,
    UnsupportedCapabilityError,
    WorkerBusyError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerNotStoppedError,
    WorkerRuntimeError,
    WorkerStoppedError,
)
from .ids import generate_id, invalid_id_message, is_valid_id
from .journal import Journal
from .models import (
    CapabilitiesInfo,
    Diagnostic,
    RunError,
    RunInfo,
    RuntimeSummary,
    StoreInfo,
    TokenUsage,
    TranscriptEntry,
    UsageTotals,
    WorkerCounts,
    WorkerDetail,
    WorkerRef,
    WorkerStatus,
    WorkerSummary,
)
from .profiles import Profile, ProfileTable
from .records import (
    EMPTY_DATA,
    EventRecord,
    InputAcceptedData,
    InputKeyRecord,
    RunEndedData,
    RunRecord,
    RuntimeStartedData,
    TranscriptAppendedData,
    TranscriptRecord,
    WorkerCreatedData,
    WorkerExtra,
    WorkerRecord,
    WorkerStoppedData,
)
from .stores.base import Batch, RuntimeStore
from .stores.memory import MemoryStore
from .wire import CreateWorkerRequest, EventPage, InputAck, TranscriptPage, WorkerAck, WorkersPage

__all__ = ["Runtime"]

logger = logging.getLogger("worker_runtime_core")

_ROLES = frozenset({"user", "system", "assistant", "tool"})
_INPUT_KINDS = frozenset({"user", "system"})
_NO_EXTRA = WorkerExtra()
_MAX_DIAGNOSTICS = 1000
#: What a run's error says when its engine raised something other than `EngineError`.
_ENGINE_FAILED = "the engine failed; see the Runtime's log"
_RETRY_FIRST_S = 0.05  # a terminal event the store refused is retried after this (doubling) or once it writes again
_RETRY_MAX_S = 1.0
_AT_FIELD_RE = re.compile(r" - at `\$\.([^`]*)`$")


class _ActiveRun:
    """Runtime-only handles of a run in flight."""

    __slots__ = (
        "content",
        "decided",
        "done",
        "end_event_id",
        "end_status",
        "finished",
        "kind",
        "profile",
        "reason",
        "record",
        "scope",
        "task",
        "worker",
    )

    def __init__(
        self, worker: WorkerRecord, record: RunRecord, profile: Profile | None, kind: str, content: str
    ) -> None:
        self.worker = worker
        self.record = record
        self.profile = profile
        self.kind = kind
        self.content = content
        self.scope: anyio.CancelScope | None = None
        self.end_status: str | None = None  # set by cancel, stop or shutdown before the run has decided
        self.reason: str | None = None
        self.decided = False  # the run's terminal status is fixed; later cancels change nothing
        self.finished = False
        self.done: anyio.Event | None = None  # made only when somebody waits
        self.end_event_id: int | None = None
        self.task: asyncio.Task[None] | None = None  # under asyncio: holds the run's task alive


class _KeyEntry:
    """An `input_id` of one Worker: in flight (`record` None, `pending` set) or accepted."""

    __slots__ = ("digest", "pending", "record")

    def __init__(self, digest: bytes, record: InputKeyRecord | None, pending: anyio.Event | None) -> None:
        self.digest = digest
        self.record = record
        self.pending = pending


class _Stop:
    """A stop under way: the first caller's task does it, everybody waits for `done`."""

    __slots__ = ("ack", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ack: WorkerAck | None = None
        self.error: WorkerRuntimeError | None = None


class _Context(RunContext):
    __slots__ = ("_active", "_rt", "content", "input_sequence", "intent", "kind", "run_id", "worker_ref")

    def __init__(self, rt: Runtime, active: _ActiveRun) -> None:
        self._rt = rt
        self._active = active
        self.worker_ref = WorkerRef(runtime_id=rt.runtime_id, worker_id=active.worker.worker_id)
        self.run_id = active.record.run_id
        self.intent = active.worker.intent
        self.kind = active.kind
        self.content = active.content
        self.input_sequence = active.record.input_sequence

    async def emit(self, content: str, *, role: str = "assistant") -> int:
        if self._active.end_status is not None:
            await anyio.lowlevel.checkpoint()  # the run is being cancelled: deliver it, append nothing
        return await self._rt._append_output(self._active, role, content)

    async def history(self, limit: int) -> list[TranscriptEntry]:
        limit = max(0, min(limit, self._rt.limits.max_page))
        end = self.input_sequence
        start = max(0, end - limit)
        try:
            records = await self._rt._store.read_transcript(self._active.worker.worker_id, start, end - start)
        except StoreCorruptError as exc:
            raise self._rt._mark_corrupt(self._active.worker, exc) from None
        return [r.to_wire() for r in records]

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        run = self._active.record
        if run.usage is not None:
            input_tokens += run.usage.input_tokens
            output_tokens += run.usage.output_tokens
        run.usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)


class Runtime:
    """An embeddable Runtime: holds Workers, runs one run per accepted input, records transcripts and events.

    ::

        async with Runtime() as rt:
            worker = await rt.create_worker()
            ack = await rt.send_input(worker.worker_ref.worker_id, "hello")
            run = await rt.wait_for_run(worker.worker_ref.worker_id, ack.run_id)

    Args:
        runtime_id: this Runtime's id; generated (or kept by a persistent store) when None.
        display_name: a label for UIs; defaults to the runtime id.
        store: where state lives; a fresh `MemoryStore` when None.
        limits: page sizes, input size, max workers and the rest; the default `Limits()` when None.
        profiles: named profiles (`ProfileConfig` or the same fields as a mapping). ``default`` is ``echo``
            unless given; ``builtin:<engine>`` exists for every engine that needs no options.
        default_profile: the profile a ``runtime_default`` selector resolves to.
        engines: extra engine classes by name, beside the built-in and entry-point ones.

    Raises:
        ConfigError: an invalid runtime id, profile or limit.

    Start and close it from the same task, best with ``async with``. Every method raises subclasses of
    `WorkerRuntimeError`; commands raise `RuntimeUnavailableError` before start, after close, and (except stop
    and cancel) while stopping.
    """

    def __init__(
        self,
        *,
        runtime_id: str | None = None,
        display_name: str | None = None,
        store: RuntimeStore | None = None,
        limits: Limits | None = None,
        profiles: Mapping[str, ProfileConfig | Mapping[str, Any]] | None = None,
        default_profile: str = DEFAULT_PROFILE,
        engines: Mapping[str, type[Engine]] | None = None,
    ) -> None:
        if runtime_id is not None and not is_valid_id(runtime_id):
            raise ConfigError(f"invalid runtime id {runtime_id!r}: use 1-128 of A-Z a-z 0-9 . _ - (not first . _ -)")
        self.limits = limits if limits is not None else Limits()
        self._store: RuntimeStore = (
            store if store is not None else MemoryStore(event_retention=self.limits.event_retention)
        )
        self._journal = Journal(self._store)
        self._profiles = ProfileTable(profiles or {}, discover_engines(engines), default_profile)
        self._requested_id = runtime_id
        self._requested_name = display_name
        self.runtime_id: str = runtime_id or ""
        self.display_name: str = display_name or self.runtime_id
        self._state: Literal["new", "running", "stopping", "closed"] = "new"
        self._closed_event: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope_type: type[anyio.CancelScope] = anyio.CancelScope  # the event loop's own, once started
        self._started_at = 0.0
        self._workers: dict[str, WorkerRecord] = {}
        # Worker ids with a change in flight (only with a store whose writes suspend): other commands on that
        # Worker wait for it, then decide on committed state. A create reserves its id here.
        self._changing: dict[str, anyio.Event] = {}
        self._creating = 0  # creates in flight: they count toward max_workers
        self._giving_up = False  # closing: a terminal event that still cannot be written is given up
        self._order: list[str] = []  # worker ids; sorted unless _order_dirty
        self._order_dirty = False
        self._unlisted: set[str] = set()  # deleted ids still in _order (until the next sort drops them)
        self._counts: dict[str, int] = {"idle": 0, "busy": 0, "stopped": 0}
        self._active: dict[str, _ActiveRun] = {}
        self._stopping: dict[str, _Stop] = {}
        self._keys: dict[str, dict[str, _KeyEntry]] = {}
        self._key_expiry: deque[tuple[float, str, str]] = deque()
        self._corrupt: dict[str, tuple[str, int]] = {}
        self._diagnostics: deque[Diagnostic] = deque(maxlen=_MAX_DIAGNOSTICS)
        self._usage = [0, 0, 0]  # runs, input tokens, output tokens
        self._created_data: dict[str, WorkerCreatedData] = {}

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def store_info(self) -> StoreInfo:
        """Kind, path and fsync policy of the store; known before start."""
        return self._store.info

    @property
    def status(self) -> Literal["new", "running", "stopping", "closed"]:
        """``new`` until started, ``running``, ``stopping`` during `close`, then ``closed``."""
        return self._state

    async def start(self) -> None:
        """Open the store, restore its Workers, mark runs that were active ``interrupted`` and start serving.

        Raises:
            ConfigError: the store belongs to another runtime id (or cannot be opened).
        """
        if self._state != "new":
            raise RuntimeUnavailableError(f"a Runtime starts once; this one is {self._state}")
        state = await self._store.open(self._requested_id, self._requested_name)
        self.runtime_id = state.runtime_id
        self.display_name = self._requested_name or state.display_name or state.runtime_id
        self._journal.opened(state.last_event_id)
        self._corrupt = dict(state.corrupt)
        self._diagnostics.extend(state.diagnostics)
        for record in state.workers:
            self._workers[record.worker_id] = record
            self._order.append(record.worker_id)
            self._counts[record.status] += 1
            self._usage[0] += record.runs
            self._usage[1] += record.input_tokens
            self._usage[2] += record.output_tokens
        self._order.sort()
        clock = now()
        ttl = self.limits.idempotency_ttl_s
        for key in sorted(state.input_keys, key=lambda k: k.created_at):
            if key.created_at + ttl > clock and key.worker_id in self._workers:
                self._remember_key(key, key.digest)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._loop = _running_asyncio_loop()
        # anyio.CancelScope() looks its event loop up on every call; a run's scope is made by the class it returns.
        self._scope_type = type(anyio.CancelScope())
        self._started_at = clock
        self._state = "running"
        for record in state.workers:
            if record.active_run is not None:
                await self._interrupt_on_start(record)
        await self._log(self._journal.event("runtime_started", None, None, RuntimeStartedData(__version__)))

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop serving: log ``runtime_stopping``, let active runs finish for up to `grace_s` seconds, mark the rest
        ``interrupted``, then close the engines and the store. Idempotent; call it from the task that started.
        """
        if self._state == "new":
            self._state = "closed"
            return
        if self._state in ("stopping", "closed"):
            if self._state == "stopping":
                if self._closed_event is None:
                    self._closed_event = anyio.Event()
                await self._closed_event.wait()
            return
        self._state = "stopping"
        self._journal.notify()
        with anyio.CancelScope(shield=True):
            while self._changing:  # an input in flight may still start its run: wait until it has
                await next(iter(self._changing.values())).wait()
            try:
                await self._log(self._journal.event("runtime_stopping", None, None, EMPTY_DATA))
            except WorkerRuntimeError:
                logger.warning("could not log runtime_stopping", exc_info=True)
            if self._active and grace_s > 0:
                with anyio.move_on_after(grace_s):
                    for active in list(self._active.values()):
                        await self._wait_run(active)
            for active in list(self._active.values()):
                self._request_end(active, "interrupted", "runtime stopping")
            self._giving_up = True  # a terminal event that cannot be written now is left to recovery
            self._journal.wake_writers()
            for active in list(self._active.values()):
                await self._wait_run(active)
        # Every run has ended, so the task group exits at once. It is exited outside the shield above: a cancel
        # scope must be left in the order it was entered.
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await self._profiles.aclose()
            await self._store.close()
        self._state = "closed"
        if self._closed_event is not None:
            self._closed_event.set()

    # --- workers ---------------------------------------------------------------------------------------------

    async def create_worker(self, request: CreateWorkerRequest | None = None, /, **fields: Any) -> WorkerDetail:
        """Create a Worker from a `CreateWorkerRequest` or the same fields as keywords (all optional).

        Raises:
            InvalidRequestError: a field is invalid (a bad `worker_id` included).
            UnknownProfileError: the profile selector names no profile.
            UnsupportedCapabilityError: the profile's engine lacks a requested capability.
            WorkerExistsError: the id is taken.
            CapacityExceededError: `max_workers` Workers exist already.
        """
        req = _create_request(request, fields)
        self._require_running()
        profile = self._profiles.resolve(req.profile)
        engine_caps = type(profile.engine).capabilities
        for cap in req.requested_capabilities:
            if cap.name not in engine_caps:
                raise UnsupportedCapabilityError(
                    f"profile {profile.name!r} (engine {profile.engine_name!r}) does not offer {cap.name!r}",
                    details={"capability": cap.name, "profile": profile.name},
                )
        wid = req.worker_id
        if wid is None:
            wid = generate_id("w")
            while wid in self._workers or wid in self._changing:  # pragma: no cover - 64 random bits
                wid = generate_id("w")
        else:
            if self._changing and wid in self._changing:  # a create or delete of this id is in flight
                await self._settle(wid)
                self._require_running()
            if wid in self._workers:
                raise WorkerExistsError(f"worker {wid!r} exists", details={"worker_id": wid})
        if len(self._workers) + self._creating >= self.limits.max_workers:
            raise CapacityExceededError(
                f"this Runtime holds its maximum of {self.limits.max_workers} workers (stopped ones count)",
                details={"max_workers": self.limits.max_workers},
            )
        extra = None
        if req.config_bundle or req.requested_capabilities or req.workspace_refs or req.mount_refs:
            extra = WorkerExtra(
                config_bundle=req.config_bundle,
                requested_capabilities=tuple(req.requested_capabilities),
                workspace_refs=tuple(req.workspace_refs),
                mount_refs=tuple(req.mount_refs),
            )
        data = self._created_data.get(profile.name)
        if data is None:  # one frozen instance per profile: 32 bytes less per Worker
            data = self._created_data[profile.name] = WorkerCreatedData(profile.name)
        event = self._journal.event("worker_created", wid, None, data)
        record = WorkerRecord(
            worker_id=wid,
            profile=profile.name,
            intent=req.intent,
            profile_selector=req.profile,
            created_at=event.created_at,
            updated_at=event.created_at,
            display_name=req.display_name,
            extra=extra,
            last_event_id=event.id,
        )
        self._creating += 1
        try:
            batch = Batch(event=event, worker=record)
            if self._journal.suspends:
                await self._commit(wid, batch)
            else:
                self._journal.append_now(batch)
        finally:
            self._creating -= 1
        self._workers[wid] = record
        if wid in self._unlisted:  # deleted and re-created before the order was sorted: it is listed already
            self._unlisted.discard(wid)
        else:
            self._order.append(wid)
            self._order_dirty = True
        self._counts["idle"] += 1
        return self._detail(record)

    async def get_worker(self, worker_id: str) -> WorkerDetail:
        """A Worker in full.

        Raises:
            InvalidWorkerIdError, WorkerNotFoundError, StoreCorruptError.
        """
        return self._detail(self._worker(worker_id))

    async def list_workers(
        self, *, status: WorkerStatus | None = None, limit: int | None = None, after: str | None = None
    ) -> WorkersPage:
        """Workers ordered by worker id, after the id `after`, optionally only those with `status`.

        Raises:
            InvalidRequestError: a bad `status`, `after` or `limit` below 1.
            LimitTooLargeError: `limit` above `max_page`.
        """
        self._require_started()
        if status is not None and status not in self._counts:
            raise InvalidRequestError(f"status must be idle, busy or stopped, not {status!r}")
        if after is not None and not is_valid_id(after):
            raise InvalidRequestError(invalid_id_message("after"), details={"field": "after"})
        size = self._page_limit(limit)
        order = self._sorted_ids()
        i = bisect_right(order, after) if after is not None else 0
        found: list[WorkerSummary] = []
        more = False
        workers = self._workers
        while i < len(order):
            record = workers[order[i]]
            i += 1
            if status is not None and record.status != status:
                continue
            if len(found) == size:
                more = True
                break
            found.append(self._summary(record))
        next_after = found[-1].worker_ref.worker_id if more and found else None
        return WorkersPage(workers=found, next_after=next_after)

    async def delete_worker(self, worker_id: str) -> WorkerAck:
        """Delete a stopped Worker with its transcript and state; its events stay.

        Raises:
            WorkerNotStoppedError: the Worker is not stopped.
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        record = self._worker(worker_id)
        self._require_running()
        wid = record.worker_id
        if self._changing and wid in self._changing:  # decided on committed state: it may be gone by then
            await self._settle(wid)
            record = self._worker(wid)
            self._require_running()
        if record.status != "stopped" or wid in self._stopping:
            raise WorkerNotStoppedError(f"worker {wid!r} is {record.status}; stop it first")
        event = self._journal.event("worker_deleted", wid, None, EMPTY_DATA)
        batch = Batch(event=event, delete_worker=True)
        if self._journal.suspends:
            await self._commit(wid, batch)
        else:
            self._journal.append_now(batch)
        del self._workers[wid]
        self._unlisted.add(wid)
        self._order_dirty = True
        self._counts["stopped"] -= 1
        self._keys.pop(wid, None)
        self._corrupt.pop(wid, None)
        return WorkerAck(worker_ref=self._ref(wid), status="deleted", cancelled_run_id=None, event_id=event.id)

    # --- input and runs --------------------------------------------------------------------------------------

    async def send_input(
        self, worker_id: str, content: str, *, kind: str = "user", input_id: str | None = None
    ) -> InputAck:
        """Accept input for an idle Worker and start one run; returns once the input is durable.

        A repeated `input_id` returns the first ack with ``duplicate=True`` (before any busy or stopped check)
        and starts nothing; a repeat whose first call is still in flight waits for its answer.

        Raises:
            InvalidInputError: bad kind, empty or oversized content, or a bad `input_id`.
            IdempotencyConflictError: `input_id` was used with other content or kind.
            WorkerBusyError: a run is active (`details["run_id"]`); nothing changed.
            WorkerStoppedError: the Worker is stopped.
            UnknownProfileError: the Worker's profile no longer exists.
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        wid = worker_id if type(worker_id) is str and worker_id in self._workers else _check_worker_id(worker_id)
        max_bytes = self.limits.max_input_bytes
        if kind not in _INPUT_KINDS:
            raise InvalidInputError(f"kind must be 'user' or 'system', not {kind!r}", details={"field": "kind"})
        if not isinstance(content, str) or not content:
            raise InvalidInputError("content must be a non-empty string", details={"field": "content"})
        if len(content) * 4 > max_bytes and len(content.encode()) > max_bytes:
            raise InvalidInputError(
                f"content is larger than max_input_bytes ({max_bytes})",
                details={"field": "content", "max_input_bytes": max_bytes},
            )
        if input_id is not None and not is_valid_id(input_id):
            raise InvalidInputError(invalid_id_message("input_id"), details={"field": "input_id"})
        self._require_running()
        record = self._worker(wid)
        digest = _digest(kind, content) if input_id is not None else b""
        waited = False
        while True:  # decided on committed state: wait out a change of this Worker in flight, then look again
            if input_id is not None:
                duplicate = await self._find_key(wid, input_id, digest)
                if duplicate is not None:
                    return duplicate
            changing = self._changing.get(wid) if self._changing else None
            if changing is None:
                break
            await self._bounded_wait(changing, f"a change to worker {wid!r}")
            waited = True  # and look for a duplicate again: the change may have been its first call
        if input_id is not None or waited:
            record = self._worker(wid)  # it may have gone while we waited
            self._require_running()
        if record.status == "stopped" or wid in self._stopping:
            raise WorkerStoppedError(f"worker {wid!r} is stopped", details={"worker_id": wid})
        active = self._active.get(wid)
        if active is not None:
            raise WorkerBusyError(
                f"worker {wid!r} is running {active.record.run_id}",
                details={"run_id": active.record.run_id},
            )
        profile = self._profiles.get(record.profile)
        if profile is None:
            raise _unknown_profile(record.profile)
        journal = self._journal
        journal.check()

        # Stage the change on a copy; readers see it once the store has it. Single flight holds: other commands
        # on this Worker wait for the change in flight.
        event_id = journal.take_id()
        clock = now()
        run_id = f"run-{event_id}"
        sequence = record.transcript_len
        run = RunRecord(run_id=run_id, input_sequence=sequence, started_at=clock)
        staged = _replace(
            record, status="busy", active_run=run, transcript_len=sequence + 1, last_event_id=event_id, updated_at=clock
        )
        key = None
        if input_id is not None:
            key = InputKeyRecord(
                worker_id=wid,
                input_id=input_id,
                digest=digest,
                run_id=run_id,
                input_sequence=sequence,
                event_id=event_id,
                created_at=clock,
            )
            entry = _KeyEntry(digest, None, anyio.Event())
            self._keys.setdefault(wid, {})[input_id] = entry
        batch = Batch(
            event=EventRecord(
                event_id, "input_accepted", wid, run_id, clock, InputAcceptedData(sequence, input_id, kind)
            ),
            worker=staged,
            entry=TranscriptRecord(
                sequence=sequence, role=kind, content=content, run_id=run_id, created_at=clock, event_id=event_id
            ),
            input_key=key,
        )
        try:
            if self._journal.suspends:
                await self._commit(wid, batch)
            else:
                self._journal.append_now(batch)
        except BaseException:
            if key is not None:
                self._forget_key(wid, key.input_id)  # a repeat waiting for this call decides again
            raise
        self._set_status(record, "busy")
        record.active_run = run
        record.transcript_len = sequence + 1
        record.last_event_id = event_id
        record.updated_at = clock
        active = _ActiveRun(record, run, profile, kind, content)
        self._active[wid] = active
        if key is not None:
            self._remember_key(key, digest)
        self._spawn(active)
        return InputAck(
            worker_ref=self._ref(wid), run_id=run_id, input_sequence=sequence, event_id=event_id, duplicate=False
        )

    async def get_run(self, worker_id: str, run_id: str) -> RunInfo:
        """Any run of a Worker, active or finished.

        Raises:
            RunNotFoundError, InvalidWorkerIdError, WorkerNotFoundError.
        """
        record = self._worker(worker_id)
        run = await self._find_run(record, run_id)
        return run.to_wire()

    async def wait_for_run(
        self,
        worker_id: str,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109  # a bounded wait is the point of this call
    ) -> RunInfo:
        """Wait until a run has a terminal status (any of them) and return it.

        Raises:
            OperationTimeoutError: `timeout` seconds passed first (the run goes on).
            RunNotFoundError, InvalidWorkerIdError, WorkerNotFoundError.
        """
        record = self._worker(worker_id)
        if self._changing:
            record = await self._settled_worker(worker_id)
        active = self._active.get(record.worker_id)
        if active is not None and active.record.run_id == run_id:
            if timeout is None:
                await self._wait_run(active)
            else:
                with anyio.move_on_after(timeout) as scope:
                    await self._wait_run(active)
                if scope.cancelled_caught:
                    raise OperationTimeoutError(
                        f"run {run_id} did not finish within {timeout}s", details={"run_id": run_id}
                    )
            if active.record.status == "running":  # closing: its end could not be recorded
                raise RuntimeUnavailableError(f"the Runtime stopped before the end of run {run_id} was recorded")
            return active.record.to_wire()
        run = await self._find_run(record, run_id)
        return run.to_wire()

    async def cancel_worker(self, worker_id: str, run_id: str | None = None, reason: str | None = None) -> WorkerAck:
        """Abort the active run (only if it is `run_id`, when given) and answer once it has ended.

        With no active run, another run named, or a stopped Worker, nothing changes and the ack's
        `cancelled_run_id` and `event_id` are null.

        Raises:
            InvalidRequestError: a `run_id` that breaks the id pattern (one that names no run is a no-op).
            OperationTimeoutError: the run has not ended within `operation_timeout_s` (it still ends cancelled).
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        if run_id is not None and not is_valid_id(run_id):
            if not (type(worker_id) is str and worker_id in self._workers):
                _check_worker_id(worker_id)  # a bad worker id is reported first, as over HTTP
            raise InvalidRequestError(invalid_id_message("run_id"), details={"field": "run_id"})
        record = await self._settled_worker(worker_id)
        self._require_started()
        wid = record.worker_id
        active = self._active.get(wid)
        if record.status == "stopped" or active is None or (run_id is not None and run_id != active.record.run_id):
            return WorkerAck(worker_ref=self._ref(wid), status=record.status, cancelled_run_id=None, event_id=None)  # type: ignore[arg-type]
        self._request_end(active, "cancelled", reason)
        if not active.finished:  # answer once the run is gone; it goes even if we stop waiting
            if active.done is None:
                active.done = anyio.Event()
            await self._bounded_wait(active.done, f"cancelling run {active.record.run_id}")
        if active.record.status != "cancelled":
            return WorkerAck(worker_ref=self._ref(wid), status=record.status, cancelled_run_id=None, event_id=None)  # type: ignore[arg-type]
        return WorkerAck(
            worker_ref=self._ref(wid),
            status=record.status,  # type: ignore[arg-type]
            cancelled_run_id=active.record.run_id,
            event_id=active.end_event_id,
        )

    async def stop_worker(self, worker_id: str, reason: str | None = None) -> WorkerAck:
        """Abort the active run, if any, and make the Worker ``stopped`` for good. Idempotent: a repeated stop
        answers with null `event_id`.

        The stop belongs to the Runtime once asked for: if the run takes longer than `operation_timeout_s` to end,
        the call raises `OperationTimeoutError` and the stop completes when the run has ended.

        Raises:
            OperationTimeoutError: the run has not ended within `operation_timeout_s` (the stop goes on).
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        record = self._worker(worker_id)
        wid = record.worker_id
        if wid not in self._stopping:
            record = await self._settled_worker(wid)
        stop = self._stopping.get(wid)
        first = stop is None
        if stop is None:
            if record.status == "stopped":
                return WorkerAck(worker_ref=self._ref(wid), status="stopped", cancelled_run_id=None, event_id=None)
            self._journal.check()
            stop = self._stopping[wid] = _Stop()
            assert self._tg is not None
            self._tg.start_soon(self._stop, record, reason, stop)
        await self._bounded_wait(stop.done, f"stopping worker {wid!r}")
        if stop.error is not None:
            raise stop.error
        assert stop.ack is not None
        if not first:  # a concurrent stop: this call changed nothing
            return WorkerAck(worker_ref=stop.ack.worker_ref, status="stopped", cancelled_run_id=None, event_id=None)
        return stop.ack

    async def _stop(self, record: WorkerRecord, reason: str | None, stop: _Stop) -> None:
        wid = record.worker_id
        try:
            with anyio.CancelScope(shield=True):
                cancelled = None
                active = self._active.get(wid)
                if active is not None:
                    self._request_end(active, "cancelled", reason or "worker stopped")
                    await self._wait_run(active)
                    if active.record.status == "cancelled":
                        cancelled = active.record.run_id
                await self._settle(wid)
                if wid in self._active:  # closing: the run's end could not be recorded
                    raise RuntimeUnavailableError(f"the Runtime stopped before worker {wid!r} could stop")
                event = self._journal.event("worker_stopped", wid, None, WorkerStoppedData(reason, cancelled))
                staged = _replace(record, status="stopped", updated_at=event.created_at, last_event_id=event.id)
                batch = Batch(event=event, worker=staged)
                if self._journal.suspends:
                    await self._commit(wid, batch)
                else:
                    self._journal.append_now(batch)
                self._set_status(record, "stopped")
                record.updated_at = event.created_at
                record.last_event_id = event.id
            stop.ack = WorkerAck(
                worker_ref=self._ref(wid), status="stopped", cancelled_run_id=cancelled, event_id=event.id
            )
        except WorkerRuntimeError as exc:
            stop.error = exc
        except Exception:
            logger.exception("stopping worker %r failed", wid)
            stop.error = InternalError(f"stopping worker {wid!r} failed; the Runtime's log has the cause")
        finally:
            del self._stopping[wid]
            stop.done.set()

    # --- reads -----------------------------------------------------------------------------------------------

    async def transcript(self, worker_id: str, start: int = 0, limit: int | None = None) -> TranscriptPage:
        """Entries `start` to `start + limit` of a Worker's transcript.

        Raises:
            InvalidRequestError: negative `start` or `limit` below 1.
            LimitTooLargeError: `limit` above `max_page`.
            InvalidWorkerIdError, WorkerNotFoundError, StoreCorruptError.
        """
        record = self._worker(worker_id)
        if not _is_int(start) or start < 0:
            raise InvalidRequestError(f"start must be an integer >= 0, not {start!r}", details={"field": "start"})
        size = self._page_limit(limit)
        total = record.transcript_len
        try:
            records = await self._store.read_transcript(record.worker_id, start, min(size, max(total - start, 0)))
        except StoreCorruptError as exc:
            raise self._mark_corrupt(record, exc) from None
        end = start + len(records)
        return TranscriptPage(
            worker_ref=self._ref(record.worker_id),
            start=start,
            limit=size,
            total_items=total,
            items=[r.to_wire() for r in records],
            next_start=end if end < total else None,
        )

    async def read_events(
        self, after: int = 0, limit: int | None = None, worker_id: str | None = None, wait: float = 0.0
    ) -> EventPage:
        """Events with id above `after` in id order, optionally only those naming `worker_id`.

        When nothing matches and `wait` > 0, answers as soon as one event matches, else after `wait` seconds
        with an empty page whose `next_after` is `after`.

        Raises:
            InvalidRequestError: negative `after`, `limit` below 1, `wait` outside 0..`max_wait_s`, bad worker id;
                `after` above the newest event id (``details["newest_id"]``: a cursor from another store, or from
                a memory store before a restart), checked before any wait.
            LimitTooLargeError: `limit` above `max_page`.
            CursorExpiredError: `after` is older than the events kept (`details["oldest_id"]`).
        """
        self._require_started()
        if not _is_int(after) or after < 0:
            raise InvalidRequestError(f"after must be an integer >= 0, not {after!r}", details={"field": "after"})
        size = self._page_limit(limit)
        if worker_id is not None and not is_valid_id(worker_id):
            raise InvalidRequestError(invalid_id_message("worker_id"), details={"field": "worker_id"})
        max_wait = self.limits.max_wait_s
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= max_wait:
            raise InvalidRequestError(
                f"wait must be 0 to {max_wait:g} seconds, not {wait!r}", details={"field": "wait"}
            )
        newest = self._journal.newest_id  # what the store holds: a reader may see one before its writer resumes
        if after > newest:
            raise InvalidRequestError(
                f"after ({after}) is above the newest event id ({newest}): the cursor is not from this event log "
                "(was the store reset?); read again from a cursor of at most newest_id",
                details={"field": "after", "newest_id": newest},
            )
        try:
            armed = self._journal.arm() if wait > 0 else None  # before the read: a write during it wakes us
            records = await self._store.read_events(after, size + 1, worker_id)
            if not records and wait > 0:
                deadline = anyio.current_time() + wait
                while not records and self._state == "running":
                    remaining = deadline - anyio.current_time()
                    if remaining <= 0:
                        break
                    await self._journal.wait_for_event(remaining, armed)
                    armed = self._journal.arm()
                    records = await self._store.read_events(after, size + 1, worker_id)
        except StoreCorruptError as exc:  # the store's own words may quote the damage: log them
            logger.error("the event log is corrupt: %s", exc.message)
            path, offset = exc.details.get("path"), exc.details.get("offset")
            path, offset = str(path) if path is not None else None, offset if isinstance(offset, int) else None
            if not any(d.code == "store_corrupt" and (d.path, d.offset) == (path, offset) for d in self._diagnostics):
                self._diagnostics.append(  # once per damaged line, however often it is read
                    Diagnostic(
                        level="error",
                        code="store_corrupt",
                        message=exc.message,
                        path=path,
                        offset=offset,
                        worker_ref=None,
                        created_at=format_time(now()),
                    )
                )
            raise StoreCorruptError(
                "the store's event log is corrupt; the Runtime's log has the detail",
                details={"path": path, "offset": offset},
            ) from None
        has_more = len(records) > size
        if has_more:
            del records[size:]
        rid = self.runtime_id
        return EventPage(
            events=[r.to_wire(rid) for r in records],
            next_after=records[-1].id if records else after,
            has_more=has_more,
        )

    async def summary(self) -> RuntimeSummary:
        """What this Runtime says about itself: identity, status, store, worker counts, limits, capabilities.

        Raises:
            RuntimeUnavailableError: the Runtime has not started (its id may not be known yet).
        """
        if self._state == "new":
            raise RuntimeUnavailableError("the Runtime has not started")
        counts = self._counts
        runs, tokens_in, tokens_out = self._usage
        return RuntimeSummary(
            runtime_id=self.runtime_id,
            display_name=self.display_name,
            version=__version__,
            status="running" if self._state == "running" else "stopping",
            started_at=format_time(self._started_at),
            store=self._store.info,
            workers=WorkerCounts(
                idle=counts["idle"], busy=counts["busy"], stopped=counts["stopped"], total=len(self._workers)
            ),
            limits=self.limits,
            capabilities=CapabilitiesInfo(
                engines=sorted(self._profiles.engines),
                profiles=self._profiles.names(),
                default_profile=self._profiles.default_name,
            ),
            usage=UsageTotals(runs=runs, input_tokens=tokens_in, output_tokens=tokens_out),
        )

    async def diagnostics(self) -> list[Diagnostic]:
        """Store repairs, corrupt records and failed runs since this Runtime started, oldest first (the newest 1000
        are kept).

        They live in memory: a restart begins with what the store reported when it opened (its repairs), and the
        failures of earlier processes are in the event log (``run_failed`` events), not here.

        Raises:
            RuntimeUnavailableError: the Runtime has not started.
        """
        if self._state == "new":
            raise RuntimeUnavailableError("the Runtime has not started")
        return list(self._diagnostics)

    # --- internals: the run ----------------------------------------------------------------------------------

    async def _run(self, active: _ActiveRun) -> None:
        """A run's task: the engine inside the run's cancel scope, then exactly one terminal state."""
        try:
            status = "completed"
            error: RunError | None = None
            profile = active.profile
            assert profile is not None
            if active.end_status is None:
                timeout = profile.timeout_s
                scope = self._scope_type(deadline=anyio.current_time() + timeout if timeout else math.inf)
                active.scope = scope
                try:
                    with scope:
                        await profile.engine.run(_Context(self, active))
                except EngineError as exc:
                    status, error = "failed", RunError(code=exc.code, message=exc.message)
                except WorkerRuntimeError as exc:
                    status, error = "failed", RunError(code=exc.code, message=exc.message)
                except Exception:
                    logger.exception("engine %r failed run %s", profile.engine_name, active.record.run_id)
                    status, error = "failed", RunError(code="engine_error", message=_ENGINE_FAILED)
                if active.end_status is not None:
                    status, error = active.end_status, None
                elif scope.cancelled_caught:
                    status = "timed_out"
                    error = RunError(code="timed_out", message=f"the run took longer than {timeout:g}s")
            else:
                status = active.end_status
            active.decided = True
            if self._journal.suspends:
                with anyio.CancelScope(shield=True):
                    await self._end_run(active, status, error)
            else:
                await self._end_run(active, status, error)  # a memory write never suspends: nothing to shield
        finally:
            if not active.finished:  # only a bug gets here: never leave waiters (or close) hanging
                logger.error("run %s ended without its terminal state", active.record.run_id)
                active.finished = True
                self._active.pop(active.worker.worker_id, None)
                if active.done is not None:
                    active.done.set()

    async def _end_run(self, active: _ActiveRun, status: str, error: RunError | None, *, retry: bool = True) -> None:
        """Record the run's one terminal status, then show it. A terminal event the store cannot write is retried
        (as soon as the store writes again) until it is: meanwhile the run stays visibly ``running``. Only at
        shutdown, or with `retry` False (start-up), is it given up: the run stays ``running`` on disk and recovery
        marks it ``interrupted``."""
        record = active.worker
        wid = record.worker_id
        run = active.record
        usage = run.usage
        reason = active.reason if status == "cancelled" else None
        journal = self._journal
        backoff = _RETRY_FIRST_S
        while True:
            clock = now()
            final = _replace(run, status=status, ended_at=clock, error=error)
            event = journal.event("run_" + status, wid, run.run_id, RunEndedData(final, reason))
            staged = _replace(
                record,
                status="idle",
                active_run=None,
                last_run=final,
                runs=record.runs + 1,
                input_tokens=record.input_tokens + (usage.input_tokens if usage is not None else 0),
                output_tokens=record.output_tokens + (usage.output_tokens if usage is not None else 0),
                last_event_id=event.id,
                updated_at=clock,
            )
            try:
                batch = Batch(event=event, worker=staged, ended_run=final)
                if self._journal.suspends:
                    await self._commit(wid, batch)
                else:
                    self._journal.append_now(batch)
                break
            except WorkerRuntimeError as exc:
                if backoff == _RETRY_FIRST_S:
                    logger.error("could not record the end of run %s (retrying): %s", run.run_id, exc.message)
                if self._giving_up or not retry:
                    self._diagnose(
                        "error", "run_end_not_recorded", f"run {run.run_id} ended {status}: {exc.message}", record
                    )
                    active.finished = True  # it stays active: recovery marks it interrupted
                    if active.done is not None:
                        active.done.set()
                    return
                await journal.wait_writable(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)
        self._set_status(record, "idle")
        record.active_run = None
        record.last_run = final
        record.runs = staged.runs
        record.input_tokens = staged.input_tokens
        record.output_tokens = staged.output_tokens
        record.last_event_id = event.id
        record.updated_at = clock
        totals = self._usage
        totals[0] += 1
        if usage is not None:
            totals[1] += usage.input_tokens
            totals[2] += usage.output_tokens
        del self._active[wid]
        active.record = final
        active.end_event_id = event.id
        if error is not None:
            self._diagnose("error", error.code, f"run {run.run_id} failed: {error.message}", record)
        active.finished = True
        if active.done is not None:
            active.done.set()

    async def _interrupt_on_start(self, record: WorkerRecord) -> None:
        run = record.active_run
        assert run is not None
        active = _ActiveRun(record, run, None, "user", "")
        self._active[record.worker_id] = active
        self._set_status(record, "busy")
        active.decided = True
        await self._end_run(active, "interrupted", None, retry=False)
        if not active.finished or record.active_run is not None:
            self._active.pop(record.worker_id, None)

    async def _append_output(self, active: _ActiveRun, role: str, content: str) -> int:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {sorted(_ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"content must be a str, not {type(content).__name__}")
        record = active.worker
        sequence = record.transcript_len
        event = self._journal.event(
            "transcript_appended", record.worker_id, active.record.run_id, TranscriptAppendedData(sequence, role)
        )
        entry = TranscriptRecord(
            sequence=sequence,
            role=role,
            content=content,
            run_id=active.record.run_id,
            created_at=event.created_at,
            event_id=event.id,
        )
        staged = _replace(record, transcript_len=sequence + 1, last_event_id=event.id, updated_at=event.created_at)
        batch = Batch(event=event, worker=staged, entry=entry)
        if self._journal.suspends:
            await self._commit(record.worker_id, batch)
        else:
            self._journal.append_now(batch)
        record.transcript_len = sequence + 1
        record.last_event_id = event.id
        record.updated_at = event.created_at
        return sequence

    async def _settle(self, wid: str) -> None:
        """Wait until no change to Worker `wid` is in flight (each wait bounded by `operation_timeout_s`)."""
        changing = self._changing.get(wid)
        while changing is not None:
            await self._bounded_wait(changing, f"a change to worker {wid!r}")
            changing = self._changing.get(wid)

    async def _settled_worker(self, worker_id: str) -> WorkerRecord:
        """`_worker`, decided on committed state: a change of it in flight is waited for first."""
        record = self._worker(worker_id)
        if self._changing and record.worker_id in self._changing:
            await self._settle(record.worker_id)
            record = self._worker(record.worker_id)
        return record

    async def _commit(self, wid: str, batch: Batch) -> None:
        """Write one change of Worker `wid` through the journal, for a store that suspends (else the callers use
        `Journal.append_now`). While it is in flight, other commands on that Worker wait for it; the caller applies
        the change once this returns."""
        journal = self._journal
        changing = self._changing.get(wid)
        while changing is not None:  # one change per Worker at a time (the callers already wait; this is a guard)
            await changing.wait()
            changing = self._changing.get(wid)
        marker = self._changing[wid] = anyio.Event()
        try:
            await journal.submit(batch)
        finally:
            del self._changing[wid]
            marker.set()

    async def _bounded_wait(self, event: anyio.Event, what: str) -> None:
        """Wait for `event` at most `operation_timeout_s`; past it raise `OperationTimeoutError` (work goes on)."""
        limit = self.limits.operation_timeout_s
        with anyio.move_on_after(limit) as scope:
            await event.wait()
        if scope.cancelled_caught:
            raise OperationTimeoutError(f"{what} is still under way after {limit:g}s; it will complete")

    def _spawn(self, active: _ActiveRun) -> None:
        """Start a run's task. Under asyncio a plain task (a third of the cost of a task-group spawn); anyio cancel
        scopes work in it all the same, `_run` catches everything, and `close` waits for every run to end."""
        if self._loop is not None:
            active.task = self._loop.create_task(self._run(active))
        else:
            assert self._tg is not None
            self._tg.start_soon(self._run, active)

    def _request_end(self, active: _ActiveRun, status: str, reason: str | None) -> None:
        if active.decided or active.end_status is not None:
            return
        active.end_status = status
        active.reason = reason
        if active.scope is not None:
            active.scope.cancel()

    async def _wait_run(self, active: _ActiveRun) -> None:
        if active.finished:
            return
        if active.done is None:
            active.done = anyio.Event()
        await active.done.wait()

    async def _find_run(self, record: WorkerRecord, run_id: str) -> RunRecord:
        """The run `run_id` of a Worker. A run id that is not an id at all names no run: `RunNotFoundError`, and
        the store never sees it."""
        if record.active_run is not None and record.active_run.run_id == run_id:
            return record.active_run
        if record.last_run is not None and record.last_run.run_id == run_id:
            return record.last_run
        try:
            run = await self._store.read_run(record.worker_id, run_id) if is_valid_id(run_id) else None
        except StoreCorruptError as exc:
            raise self._mark_corrupt(record, exc) from None
        if run is None:
            shown = str(run_id)[:200]
            raise RunNotFoundError(f"worker {record.worker_id!r} has no run {shown!r}", details={"run_id": shown})
        return run

    # --- internals: idempotency ------------------------------------------------------------------------------

    async def _find_key(self, wid: str, input_id: str, digest: bytes) -> InputAck | None:
        while True:
            keys = self._keys.get(wid)
            entry = keys.get(input_id) if keys else None
            if entry is None:
                return None
            if entry.digest != digest:
                raise IdempotencyConflictError(
                    f"input_id {input_id!r} was used with other content", details={"input_id": input_id}
                )
            record = entry.record
            if record is not None:
                if record.created_at + self.limits.idempotency_ttl_s <= now():
                    self._forget_key(wid, input_id)
                    return None
                return InputAck(
                    worker_ref=self._ref(wid),
                    run_id=record.run_id,
                    input_sequence=record.input_sequence,
                    event_id=record.event_id,
                    duplicate=True,
                )
            assert entry.pending is not None
            await entry.pending.wait()  # the first call is in flight: take its answer

    def _remember_key(self, key: InputKeyRecord, digest: bytes) -> None:
        keys = self._keys.setdefault(key.worker_id, {})
        entry = keys.get(key.input_id)
        if entry is None:
            keys[key.input_id] = _KeyEntry(digest, key, None)
        else:
            entry.record = key
            if entry.pending is not None:
                entry.pending.set()
                entry.pending = None
        expiry = self._key_expiry
        expiry.append((key.created_at + self.limits.idempotency_ttl_s, key.worker_id, key.input_id))
        clock = now()
        while expiry and expiry[0][0] <= clock:
            _, wid, iid = expiry.popleft()
            found = self._keys.get(wid, {}).get(iid)
            if found is not None and found.record is not None:
                if found.record.created_at + self.limits.idempotency_ttl_s <= clock:
                    self._forget_key(wid, iid)

    def _forget_key(self, wid: str, input_id: str) -> None:
        keys = self._keys.get(wid)
        if not keys:
            return
        entry = keys.pop(input_id, None)
        if not keys:
            del self._keys[wid]
        if entry is not None and entry.pending is not None:
            entry.pending.set()

    # --- internals: plumbing ---------------------------------------------------------------------------------

    async def _log(self, event: EventRecord) -> None:
        await self._journal.submit(Batch(event=event))

    def _set_status(self, record: WorkerRecord, status: str) -> None:
        counts = self._counts
        counts[record.status] -= 1
        counts[status] += 1
        record.status = status

    def _diagnose(
        self, level: Literal["info", "warning", "error"], code: str, message: str, record: WorkerRecord
    ) -> None:
        self._diagnostics.append(
            Diagnostic(
                level=level,
                code=code,
                message=message,
                path=None,
                offset=None,
                worker_ref=self._ref(record.worker_id),
                created_at=format_time(now()),
            )
        )

    def _mark_corrupt(self, record: WorkerRecord, exc: StoreCorruptError) -> StoreCorruptError:
        """From now on this Worker answers `store_corrupt`; the rest of the Runtime goes on. Returns the error to
        raise: the path and offset in `details`, the store's own words only in the diagnostic."""
        path, offset = exc.details.get("path"), exc.details.get("offset")
        if record.worker_id in self._corrupt:
            return _corrupt_error(record.worker_id, self._corrupt[record.worker_id])
        damage = self._corrupt[record.worker_id] = (str(path), int(offset) if isinstance(offset, int) else -1)
        self._diagnostics.append(
            Diagnostic(
                level="error",
                code="store_corrupt",
                message=exc.message,
                path=str(path) if path is not None else None,
                offset=offset if isinstance(offset, int) else None,
                worker_ref=self._ref(record.worker_id),
                created_at=format_time(now()),
            )
        )
        return _corrupt_error(record.worker_id, damage)

    def _require_started(self) -> None:
        if self._state not in ("running", "stopping"):
            raise RuntimeUnavailableError(f"the Runtime is {self._state}")

    def _require_running(self) -> None:
        if self._state != "running":
            raise RuntimeUnavailableError(f"the Runtime is {self._state}; it accepts no new work")

    def _worker(self, worker_id: str) -> WorkerRecord:
        # A key of `_workers` passed the id check when its Worker was made: only a miss needs the pattern.
        record = self._workers.get(worker_id) if type(worker_id) is str else None
        if record is None:
            wid = _check_worker_id(worker_id)
            self._require_started()
            record = self._workers.get(wid)  # a str subclass (a StrEnum member, say) finds its Worker here
            if record is None:
                raise WorkerNotFoundError(f"no worker {wid!r}", details={"worker_id": wid})
        else:
            self._require_started()
        damage = self._corrupt.get(worker_id) if self._corrupt else None
        if damage is not None:
            raise _corrupt_error(worker_id, damage)
        return record

    def _page_limit(self, limit: int | None) -> int:
        if limit is None:
            return self.limits.default_page
        if not _is_int(limit) or limit < 1:
            raise InvalidRequestError(f"limit must be an integer >= 1, not {limit!r}", details={"field": "limit"})
        if limit > self.limits.max_page:
            raise LimitTooLargeError(
                f"limit {limit} is above max_page ({self.limits.max_page})", details={"max_page": self.limits.max_page}
            )
        return limit

    def _sorted_ids(self) -> list[str]:
        if self._order_dirty:
            if self._unlisted:
                unlisted = self._unlisted
                self._order = [wid for wid in self._order if wid not in unlisted]
                self._unlisted = set()
            self._order.sort()  # a sorted run plus a short tail: Timsort merges it in linear time
            self._order_dirty = False
        return self._order

    def _ref(self, worker_id: str) -> WorkerRef:
        return WorkerRef(runtime_id=self.runtime_id, worker_id=worker_id)

    def _summary_fields(self, record: WorkerRecord) -> dict[str, Any]:
        """The fields a worker summary and a worker detail share."""
        return {
            "worker_ref": self._ref(record.worker_id),
            "display_name": record.display_name,
            "display_ref": f"{record.display_name or record.worker_id}@{self.display_name}",
            "status": record.status,
            "profile": record.profile,
            "created_at": format_time(record.created_at),
            "updated_at": format_time(record.updated_at),
            "active_run": record.active_run.to_wire() if record.active_run is not None else None,
        }

    def _summary(self, record: WorkerRecord) -> WorkerSummary:
        return WorkerSummary(**self._summary_fields(record))

    def _detail(self, record: WorkerRecord) -> WorkerDetail:
        extra = record.extra or _NO_EXTRA
        return WorkerDetail(
            **self._summary_fields(record),
            intent=record.intent,
            profile_selector=record.profile_selector,
            config_bundle=extra.config_bundle,
            requested_capabilities=list(extra.requested_capabilities),
            workspace_refs=list(extra.workspace_refs),
            mount_refs=list(extra.mount_refs),
            last_run=record.last_run.to_wire() if record.last_run is not None else None,
            transcript_len=record.transcript_len,
            last_event_id=record.last_event_id,
            usage=UsageTotals(runs=record.runs, input_tokens=record.input_tokens, output_tokens=record.output_tokens),
        )


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # trio


def _check_worker_id(worker_id: object) -> str:
    if not is_valid_id(worker_id):
        raise InvalidWorkerIdError(invalid_id_message("worker_id"), details={"worker_id": str(worker_id)[:200]})
    return worker_id  # type: ignore[return-value]  # is_valid_id checked the type


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _digest(kind: str, content: str) -> bytes:
    return hashlib.blake2b(f"{kind}\0{content}".encode(), digest_size=16).digest()


def _unknown_profile(name: str) -> WorkerRuntimeError:
    return UnknownProfileError(f"the worker's profile {name!r} no longer exists", details={"profile": name})


def _corrupt_error(worker_id: str, damage: tuple[str, int]) -> StoreCorruptError:
    return StoreCorruptError(
        f"the store's data for worker {worker_id!r} is corrupt; the diagnostics name the damage",
        details={"path": damage[0], "offset": damage[1]},
    )


def _replace(record: Any, **changes: Any) -> Any:
    """A staged copy of a record with `changes`: what the store writes before the live record changes."""
    return msgspec.structs.replace(record, **changes)


def _create_request(request: CreateWorkerRequest | None, fields: dict[str, Any]) -> CreateWorkerRequest:
    if request is not None and fields:
        raise TypeError("pass a CreateWorkerRequest or keyword fields, not both")
    source: Any = msgspec.to_builtins(request if request is not None else fields)
    try:
        return msgspec.convert(source, CreateWorkerRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_FIELD_RE.search(text)
        if at is None:
            raise InvalidRequestError(f"invalid create request: {text}") from None
        field = at.group(1)
        key = field.rpartition(".")[2]
        if text.startswith("Expected `str` matching regex") or (
            text.startswith("Expected `str` of length") and (key == "id" or key.endswith("_id"))
        ):
            raise InvalidRequestError(invalid_id_message(field), details={"field": field}) from None
        raise InvalidRequestError(f"invalid create request: {text}", details={"field": field}) from None
