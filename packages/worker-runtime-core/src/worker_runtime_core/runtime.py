"""The `Runtime`: the public face over the journal, the Worker registry, the run supervisor, idempotency keys,
views and diagnostics (each in its own module); here are its methods, their checks and what they answer."""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import msgspec

from ._backends import spawn_system_task
from ._version import __version__
from .checks import check_worker_id, create_request, input_digest, is_int, page_limit
from .config import DEFAULT_PROFILE, Limits, ProfileConfig
from .deltas import DeltaSubscription
from .diagnostics import Diagnostics, corrupt_error
from .engines.base import Engine
from .engines.registry import discover_engines
from .errors import (
    CapacityExceededError,
    ConfigError,
    InvalidInputError,
    InvalidRequestError,
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
from .keys import InputKeys
from .lifecycle import STATUS_AFTER
from .models import (
    CapabilitiesInfo,
    Diagnostic,
    RunInfo,
    RuntimeSummary,
    StoreInfo,
    StreamEvent,
    UsageTotals,
    WorkerCounts,
    WorkerDetail,
    WorkerRef,
    WorkerStatus,
    WorkerSummary,
)
from .profiles import ProfileTable
from .queue import RunQueue
from .records import (
    EMPTY_DATA,
    EventRecord,
    InputAcceptedData,
    InputKeyRecord,
    RunRecord,
    RuntimeStartedData,
    TranscriptRecord,
    WorkerCreatedData,
    WorkerExtra,
    WorkerRecord,
)
from .registry import Registry, bounded_wait
from .runs import ActiveRun
from .stores.base import Batch, RuntimeStore, StoreHealth, store_health
from .stores.memory import MemoryStore
from .streams import frame, read_frames
from .supervisor import Supervisor
from .times import format_time, now
from .views import worker_detail, worker_summary
from .wire import (
    CreateWorkerRequest,
    EventPage,
    InputAck,
    RequestsPage,
    RespondAck,
    StreamPage,
    TranscriptPage,
    WorkerAck,
    WorkersPage,
)

__all__ = ["Runtime"]

logger = logging.getLogger("worker_runtime_core")

_INPUT_KINDS = frozenset({"user", "system"})
_ON_BUSY = frozenset({"reject", "enqueue", "interrupt"})
_ACCEPTED_STATUS = STATUS_AFTER["accept_committed"]  # what an accepted input's staged record says


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

    Use it with ``async with``, or call `start` and `close` (from any task and cancel scope: its task group lives
    in a task of its own). Every method raises subclasses of
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
        self._store: RuntimeStore = store if store is not None else MemoryStore()
        self._journal = Journal(self._store)
        self._profiles = ProfileTable(profiles or {}, discover_engines(engines), default_profile)
        self._requested_id = runtime_id
        self._requested_name = display_name
        self.runtime_id: str = runtime_id or ""
        self.display_name: str = display_name or self.runtime_id
        self._state: Literal["new", "running", "stopping", "closed"] = "new"
        self._closed_event: anyio.Event | None = None
        self._runner: object = None  # the task that holds the task group (see `_hold_task_group`)
        self._release = anyio.Event()  # set by `close`: the task group may exit
        self._runner_done = anyio.Event()
        self._started_at = 0.0
        self._registry = Registry(self._journal, self.limits.operation_timeout_s)
        self._keys = InputKeys(self.limits.idempotency_ttl_s)
        self._diagnostics = Diagnostics(self._ref)
        self._supervisor = Supervisor(
            self._journal, self._registry, self._diagnostics, self._store, self.limits, self._ref
        )
        self._queue = RunQueue(self._supervisor, self._profiles, self._keys)
        self._created_data: dict[str, WorkerCreatedData] = {}
        self._stopping: anyio.Event | None = None  # set once `close` has logged runtime_stopping (or failed to)
        self._stopping_record: EventRecord | None = None
        self._stream_bound: int | None = None  # the id runtime_stopping was staged with

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
    def store_health(self) -> StoreHealth:
        """Whether the store can write: ``ok``, ``cannot_write`` (a write was refused, nothing of it on disk; the
        next is tried normally) or ``outcome_unknown`` (a failed fsync: no write until a restart). A store
        without a `health` property is ``ok``."""
        return store_health(self._store)

    @property
    def status(self) -> Literal["new", "running", "stopping", "closed"]:
        """``new`` until started, ``running``, ``stopping`` during `close`, then ``closed``."""
        return self._state

    async def start(self) -> None:
        """Open the store, restore its Workers, log ``runtime_started``, then mark runs that were active
        ``interrupted`` (their events submitted together, so a store that group-commits writes them as one batch).

        Raises:
            ConfigError: the store belongs to another runtime id (or cannot be opened).
            RuntimeUnavailableError: the store cannot write its first events; the Runtime is then closed.
        """
        if self._state != "new":
            raise RuntimeUnavailableError(f"a Runtime starts once; this one is {self._state}")
        state = await self._store.open(self._requested_id, self._requested_name, limits=self.limits)
        self.runtime_id = state.runtime_id
        self.display_name = self._requested_name or state.display_name or state.runtime_id
        self._journal.opened(state.last_event_id)
        self._diagnostics.restore(state.diagnostics, state.corrupt)
        self._registry.restore(state.workers)
        self._queue.restore(state.workers, state.queued_content)
        clock = now()
        self._keys.restore(state.input_keys, self._registry.workers)
        ready = anyio.Event()
        self._stopping = anyio.Event()
        self._runner_done = anyio.Event()
        self._release = anyio.Event()
        self._runner = spawn_system_task(lambda: self._hold_task_group(ready))
        await ready.wait()
        self._started_at = clock
        self._state = "running"
        try:
            await self._log(self._journal.event("runtime_started", None, None, RuntimeStartedData(__version__)))
            await self._supervisor.interrupt_on_start(
                [record for record in state.workers if record.active_run is not None]
            )
            await self._queue.start_all([record for record in state.workers if record.queued])
        except BaseException:  # the store cannot write: release the task group and the store, then raise
            self._state = "closed"
            with anyio.CancelScope(shield=True):
                self._supervisor.closing()
                self._release.set()  # no run has started: the task group exits at once
                await self._runner_done.wait()
                await self._profiles.aclose()
                await self._store.close()
            raise

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop serving: log ``runtime_stopping``, let active runs finish for up to `grace_s` seconds, mark the rest
        ``interrupted``, then close the engines and the store. Idempotent. Any task may call it, inside any cancel
        scope: it runs to the end shielded (bound it with `grace_s`), and a stop asked for while it closes the store
        raises `RuntimeUnavailableError`.
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
        self._queue.frozen = True  # queued runs stay queued: they start after the restart
        self._journal.notify()
        with anyio.CancelScope(shield=True):
            while self._registry.changing:  # an input in flight may still start its run: wait until it has
                await next(iter(self._registry.changing.values())).wait()
            stopping = self._journal.event("runtime_stopping", None, None, EMPTY_DATA)
            self._stream_bound = stopping.id  # before any later event exists (see `stream_bound`)
            try:
                await self._log(stopping)
            except WorkerRuntimeError:
                logger.warning("could not log runtime_stopping", exc_info=True)
                stopping = EventRecord(0, "runtime_stopping", None, None, stopping.created_at, EMPTY_DATA)
            self._stopping_record = stopping
            if self._stopping is not None:
                self._stopping.set()
            self._journal.notify()  # streams waiting for events wake up, see the signal and end
            self._supervisor.requests.shutting_down = True  # waiting runs are interrupted at once, not after grace
            for active in list(self._supervisor.requests.open.values()):
                self._supervisor.request_end(active, "interrupted", "runtime stopping")
            if self._supervisor.active and grace_s > 0:
                with anyio.move_on_after(grace_s):
                    for active in list(self._supervisor.active.values()):
                        await self._supervisor.wait_run(active)
            for active in list(self._supervisor.active.values()):
                self._supervisor.request_end(active, "interrupted", "runtime stopping")
            self._supervisor.giving_up = True  # a terminal event that cannot be written now is left to recovery
            self._journal.wake_writers()
            for active in list(self._supervisor.active.values()):
                await self._supervisor.wait_run(active)
            # Every run has ended: the task group exits once the stops still under way are done. A stop asked
            # for from now on is refused (the Runtime is closing).
            self._supervisor.closing()
            self._release.set()
            await self._runner_done.wait()
            self._queue.release()  # a wait for a queued run answers: the Runtime stopped before it started
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
        req = create_request(request, fields)
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
            while wid in self._registry.workers or wid in self._registry.changing:  # pragma: no cover - 64 random bits
                wid = generate_id("w")
        else:
            if self._registry.changing and wid in self._registry.changing:  # a create or delete of this id is in flight
                await self._registry.settle(wid)
                self._require_running()
            if wid in self._registry.workers:
                raise WorkerExistsError(f"worker {wid!r} exists", details={"worker_id": wid})
        if len(self._registry.workers) + self._registry.creating >= self.limits.max_workers:
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
        self._registry.creating += 1
        try:
            batch = Batch(event=event, worker=record)
            if self._journal.suspends:
                await self._registry.commit(wid, batch)
            else:
                self._journal.append_now(batch)
        finally:
            self._registry.creating -= 1
        self._registry.add(record)
        return self._view(record)

    async def get_worker(self, worker_id: str) -> WorkerDetail:
        """A Worker in full.

        Raises:
            InvalidWorkerIdError, WorkerNotFoundError, StoreCorruptError.
        """
        return self._view(self._worker(worker_id))

    async def list_workers(
        self, *, status: WorkerStatus | None = None, limit: int | None = None, after: str | None = None
    ) -> WorkersPage:
        """Workers ordered by worker id, after the id `after`, optionally only those with `status`.

        Raises:
            InvalidRequestError: a bad `status`, `after` or `limit` below 1.
            LimitTooLargeError: `limit` above `max_page`.
        """
        self._require_started()
        if status is not None and status not in self._registry.counts:
            raise InvalidRequestError(f"status must be idle, busy or stopped, not {status!r}")
        if after is not None and not is_valid_id(after):
            raise InvalidRequestError(invalid_id_message("after"), details={"field": "after"})
        size = page_limit(limit, self.limits)
        order = self._registry.sorted_ids()
        i = bisect_right(order, after) if after is not None else 0
        found: list[WorkerSummary] = []
        more = False
        workers = self._registry.workers
        while i < len(order):
            record = workers[order[i]]
            i += 1
            if status is not None and record.status != status:
                continue
            if len(found) == size:
                more = True
                break
            found.append(worker_summary(record, self._ref(record.worker_id), self.display_name))
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
        registry = self._registry
        if registry.changing and wid in registry.changing:  # decided on committed state: it may be gone by then
            await registry.settle(wid)
            record = self._worker(wid)
            self._require_running()
        if registry.state(record) != "stopped":
            raise WorkerNotStoppedError(f"worker {wid!r} is {record.status}; stop it first")
        event = self._journal.event("worker_deleted", wid, None, EMPTY_DATA)
        batch = Batch(event=event, delete_worker=True)
        await registry.write_change(
            record, batch, "delete", "delete_committed", "delete_refused", ("delete", "delete_committed")
        )
        registry.remove(wid)
        self._keys.drop_worker(wid)
        self._diagnostics.corrupt.pop(wid, None)
        return WorkerAck(worker_ref=self._ref(wid), status="deleted", cancelled_run_id=None, event_id=event.id)

    # --- input and runs --------------------------------------------------------------------------------------

    async def send_input(
        self,
        worker_id: str,
        content: str,
        *,
        kind: str = "user",
        input_id: str | None = None,
        on_busy: str = "reject",
    ) -> InputAck:
        """Accept input and start one run; returns once the input is durable.

        `on_busy` says what input to a busy Worker does: ``reject`` (`WorkerBusyError`), ``enqueue`` (queued behind
        the active run: the ack has ``queued=True`` and ``input_sequence=None``; queued runs start in acceptance
        order, each logging ``run_started``) or ``interrupt`` (the active run is cancelled with reason
        ``interrupted_by_input``, and the ack waits until it has ended and this input's run has started; queued runs
        stay queued behind it).

        A repeated `input_id` returns the first ack with ``duplicate=True`` (before any busy or stopped check, and
        whatever its `on_busy`) and starts nothing; a repeat whose first call is still in flight waits for its
        answer.

        Raises:
            InvalidInputError: bad kind, empty or oversized content, a bad `input_id` or `on_busy`.
            IdempotencyConflictError: `input_id` was used with other content or kind.
            WorkerBusyError: a run is active (`details["run_id"]`) and `on_busy` is ``reject``; nothing changed.
            QueueFullError: `max_queue` runs are queued already (``enqueue``); nothing changed.
            OperationTimeoutError: (``interrupt``) the active run has not ended within `operation_timeout_s` (it
                still ends cancelled; this input is not accepted).
            WorkerStoppedError: the Worker is stopped.
            UnknownProfileError: the Worker's profile no longer exists.
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        wid = (
            worker_id if type(worker_id) is str and worker_id in self._registry.workers else check_worker_id(worker_id)
        )
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
        if on_busy != "reject" and on_busy not in _ON_BUSY:
            raise InvalidInputError(
                f"on_busy must be 'reject', 'enqueue' or 'interrupt', not {on_busy!r}", details={"field": "on_busy"}
            )
        if self._state != "running":  # the check, inline: this is every input's path
            self._require_running()
        record = self._worker(wid)
        digest = input_digest(kind, content) if input_id is not None else b""
        waited = False
        while True:  # decided on committed state: wait out a change of this Worker in flight, then look again
            if input_id is not None:
                key = await self._keys.find(wid, input_id, digest)
                if key is not None:
                    return InputAck(
                        worker_ref=self._ref(wid),
                        run_id=key.run_id,
                        input_sequence=key.input_sequence,
                        event_id=key.event_id,
                        duplicate=True,
                        queued=key.queued,
                    )
            changing = self._registry.changing.get(wid) if self._registry.changing else None
            if changing is None:
                break
            await bounded_wait(changing, self.limits.operation_timeout_s, f"a change to worker {wid!r}")
            waited = True  # and look for a duplicate again: the change may have been its first call
        if input_id is not None or waited:
            record = self._worker(wid)  # it may have gone while we waited
            self._require_running()
        states = self._registry.states
        if record.status == "stopped" or (states and states.get(wid) == "stopping"):
            raise WorkerStoppedError(f"worker {wid!r} is stopped", details={"worker_id": wid})
        if record.status == "busy":  # a run is active (or, between two runs, the next queued one is starting)
            if on_busy == "enqueue":
                run_id, event_id = await self._queue.enqueue(
                    record, content, kind, input_id, digest, self.limits.max_queue
                )
                return InputAck(
                    worker_ref=self._ref(wid),
                    run_id=run_id,
                    input_sequence=None,
                    event_id=event_id,
                    duplicate=False,
                    queued=True,
                )
            if on_busy == "interrupt":
                return await self._interrupting_input(record, content, kind, input_id, digest)
            busy_run = self._queue.busy_run_id(record)
            raise WorkerBusyError(f"worker {wid!r} is running {busy_run}", details={"run_id": busy_run})
        return await self._accept(record, content, kind, input_id, digest)

    async def _interrupting_input(
        self, record: WorkerRecord, content: str, kind: str, input_id: str | None, digest: bytes
    ) -> InputAck:
        """``on_busy="interrupt"`` to a busy Worker: hold the slot, cancel the active run and wait for its end, then
        accept this input in its place (queued runs stay queued behind it)."""
        wid = record.worker_id
        queue = self._queue
        queue.hold(wid)
        try:
            while True:
                await queue.interrupt(record, self.limits.operation_timeout_s)
                await self._registry.settle(wid)
                record = self._worker(wid)
                self._require_running()
                states = self._registry.states
                if record.status == "stopped" or (states and states.get(wid) == "stopping"):
                    raise WorkerStoppedError(f"worker {wid!r} is stopped", details={"worker_id": wid})
                if wid not in self._supervisor.active:
                    break
            # Idle (nothing queued), or busy between two runs with the slot held for this input.
            return await self._accept(record, content, kind, input_id, digest, slot=record.status == "busy")
        finally:
            queue.interrupted(record)

    async def _accept(
        self,
        record: WorkerRecord,
        content: str,
        kind: str,
        input_id: str | None,
        digest: bytes,
        *,
        slot: bool = False,
    ) -> InputAck:
        """Accept an input and start its run: to an idle Worker, or (`slot`) to a busy one between two runs, in the
        slot an interrupting input holds."""
        wid = record.worker_id
        profile = self._profiles.get(record.profile)
        if profile is None:
            raise _unknown_profile(record.profile)
        journal = self._journal
        if journal.suspends:  # a store that never suspends settles a failed write at once: nothing to wait out
            journal.check()

        # Stage the change on a copy; readers see it once the store has it. Single flight holds: other commands
        # on this Worker wait for the change in flight.
        event_id = journal.take_id()
        clock = now()
        run_id = f"run-{event_id}"
        sequence = record.transcript_len
        run = RunRecord(run_id=run_id, input_sequence=sequence, started_at=clock)
        staged = _replace(
            record,
            status=_ACCEPTED_STATUS,
            active_run=run,
            transcript_len=sequence + 1,
            last_event_id=event_id,
            updated_at=clock,
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
            self._keys.reserve(wid, input_id, digest)
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
        # `Registry.write_change`, inlined: this is every input's path, and the call costs it about 1% of its
        # instructions (bench-core --instructions --busy).
        registry = self._registry
        if journal.suspends:
            registry.transition(record, "start" if slot else "accept")
            try:
                await registry.commit(wid, batch)
            except BaseException:
                registry.transition(record, "start_refused" if slot else "accept_refused")
                if key is not None:
                    self._keys.forget(wid, key.input_id)  # a repeat waiting for this call decides again
                raise
            registry.transition(record, "start_committed" if slot else "accept_committed")
        else:  # a write that never suspends: written and shown in one step, with nothing in flight between
            try:
                journal.append_now(batch)
            except BaseException:
                if key is not None:
                    self._keys.forget(wid, key.input_id)
                raise
            if slot:
                registry.transition(record, "start")
                registry.transition(record, "start_committed")
            else:
                registry.transition(record, "accepted")
        record.active_run = run
        record.transcript_len = sequence + 1
        record.last_event_id = event_id
        record.updated_at = clock
        if key is not None:
            self._keys.remember(key, digest)
        self._supervisor.spawn(ActiveRun(record, run, profile, kind, content))
        return InputAck(  # `_ref(wid)`, inline: this is every input's path
            worker_ref=WorkerRef(runtime_id=self.runtime_id, worker_id=wid),
            run_id=run_id,
            input_sequence=sequence,
            event_id=event_id,
            duplicate=False,
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
        if self._registry.changing:
            record = await self._settled_worker(worker_id)
        active = self._supervisor.active.get(record.worker_id)
        if active is None or active.record.run_id != run_id:
            active = self._queue.handle(record.worker_id, run_id) if record.queued else None  # it may start first
        if active is not None:
            if timeout is None:
                await self._supervisor.wait_run(active)
            else:
                with anyio.move_on_after(timeout) as scope:
                    await self._supervisor.wait_run(active)
                if scope.cancelled_caught:
                    raise OperationTimeoutError(
                        f"run {run_id} did not finish within {timeout}s", details={"run_id": run_id}
                    )
            if self._registry.changing and record.worker_id in self._registry.changing:
                await self._registry.settle(record.worker_id)  # a queued run starting in its place: it has, then
            if active.record.status == "running":  # closing: its end could not be recorded
                raise RuntimeUnavailableError(f"the Runtime stopped before the end of run {run_id} was recorded")
            if active.record.status == "queued":  # closing: it stays queued, and starts after the restart
                raise RuntimeUnavailableError(f"the Runtime stopped before run {run_id} started; it stays queued")
            return active.record.to_wire()
        run = await self._find_run(record, run_id)
        return run.to_wire()

    async def cancel_worker(self, worker_id: str, run_id: str | None = None, reason: str | None = None) -> WorkerAck:
        """Abort the active run (only if it is `run_id`, when given) and answer once it has ended. A `run_id` that
        names a queued run ends only that run (``cancelled``, never started). The ack's `status` is the Worker's
        after the call: ``busy`` when a queued run started in place of the cancelled one.

        With no active run, another run named, or a stopped Worker, nothing changes and the ack's
        `cancelled_run_id` and `event_id` are null.

        Raises:
            InvalidRequestError: a `run_id` that breaks the id pattern (one that names no run is a no-op).
            OperationTimeoutError: the run has not ended within `operation_timeout_s` (it still ends cancelled).
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        if run_id is not None and not is_valid_id(run_id):
            if not (type(worker_id) is str and worker_id in self._registry.workers):
                check_worker_id(worker_id)  # a bad worker id is reported first, as over HTTP
            raise InvalidRequestError(invalid_id_message("run_id"), details={"field": "run_id"})
        record = await self._settled_worker(worker_id)
        self._require_started()
        if run_id is not None and record.queued and self._queue.handle(record.worker_id, run_id) is not None:
            cancelled = await self._queue.cancel(record, run_id, reason)  # a queued run: only it ends
        else:
            cancelled = await self._supervisor.cancel(record, run_id, reason)
        return WorkerAck(
            worker_ref=self._ref(record.worker_id),
            status=record.status,  # type: ignore[arg-type]
            cancelled_run_id=cancelled.record.run_id if cancelled is not None else None,
            event_id=cancelled.end_event_id if cancelled is not None else None,
        )

    async def stop_worker(self, worker_id: str, reason: str | None = None) -> WorkerAck:
        """Abort the active run, if any, cancel every queued run, and make the Worker ``stopped`` for good.
        Idempotent: a repeated stop answers with null `event_id`. The ack's `cancelled_run_id` is the active run it
        ended, else the first queued one; `cancelled_run_ids` lists every run it ended.

        The stop belongs to the Runtime once asked for: if the run takes longer than `operation_timeout_s` to end,
        the call raises `OperationTimeoutError` and the stop completes when the run has ended.

        Raises:
            OperationTimeoutError: the run has not ended within `operation_timeout_s` (the stop goes on).
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        record = self._worker(worker_id)
        wid = record.worker_id
        if wid not in self._supervisor.stopping:
            record = await self._settled_worker(wid)
        stop = self._supervisor.stopping.get(wid)
        first = stop is None
        if stop is None:
            if record.status == "stopped":
                return WorkerAck(worker_ref=self._ref(wid), status="stopped", cancelled_run_id=None, event_id=None)
            self._journal.check()
            stop = self._supervisor.begin_stop(record, reason)
        await bounded_wait(stop.done, self.limits.operation_timeout_s, f"stopping worker {wid!r}")
        if stop.error is not None:
            raise stop.error
        assert stop.ack is not None
        if not first:  # a concurrent stop: this call changed nothing
            return WorkerAck(worker_ref=stop.ack.worker_ref, status="stopped", cancelled_run_id=None, event_id=None)
        return stop.ack

    async def respond(
        self,
        worker_id: str,
        run_id: str,
        request_id: str,
        *,
        approved: bool | None = None,
        content: str | None = None,
        response_id: str | None = None,
    ) -> RespondAck:
        """Answer a run's request for input (its `pending_request`); returns once the ``input_responded`` event is
        durable, the run ``running`` again.

        An ``approval`` needs `approved` (`content` is an optional comment), a ``question`` `content`. A repeat with
        the `response_id` of the answer that closed the request gets that first ack with ``duplicate=True``.

        Raises:
            InvalidRequestError: a bad `request_id` or `response_id`, an answer that does not fit the request's
                kind, or `content` above `max_input_bytes`.
            RequestNotFoundError: the run never issued `request_id`.
            RequestClosedError: the request is closed (answered, timed out, or ended with its run).
            IdempotencyConflictError: `response_id` answered it with another answer.
            RunNotFoundError: the Worker has no run `run_id` (one that is not an id at all names none).
            InvalidWorkerIdError, WorkerNotFoundError, RuntimeUnavailableError.
        """
        for field, value in (("request_id", request_id), ("response_id", response_id)):
            if (value is not None or field != "response_id") and not is_valid_id(value):
                if not (type(worker_id) is str and worker_id in self._registry.workers):
                    check_worker_id(worker_id)  # a bad worker id is reported first, as over HTTP
                raise InvalidRequestError(invalid_id_message(field), details={"field": field})
        max_bytes = self.limits.max_input_bytes
        if isinstance(content, str) and len(content) * 4 > max_bytes and len(content.encode()) > max_bytes:
            raise InvalidRequestError(
                f"content is larger than max_input_bytes ({max_bytes})",
                details={"field": "content", "max_input_bytes": max_bytes},
            )
        record = await self._settled_worker(worker_id)
        self._require_running()
        active = self._supervisor.active.get(record.worker_id)
        run = active.record if active is not None and active.record.run_id == run_id else None
        if run is None:
            run = await self._find_run(record, run_id)
        return await self._supervisor.requests.respond(record, run, request_id, approved, content, response_id)

    async def open_requests(self, *, after: int = 0, limit: int | None = None) -> RequestsPage:
        """The open requests for input of this Runtime's runs, ordered by the id of the event that opened each
        (``input_requested``), those above `after`; `next_after` is the next page's `after`, null on the last.

        Raises:
            InvalidRequestError: negative `after`, `limit` below 1.
            LimitTooLargeError: `limit` above `max_page`.
            RuntimeUnavailableError: the Runtime has not started, or has closed.
        """
        self._require_started()
        if not is_int(after) or after < 0:
            raise InvalidRequestError(f"after must be an integer >= 0, not {after!r}", details={"field": "after"})
        return self._supervisor.requests.page(after, page_limit(limit, self.limits))

    # --- reads -----------------------------------------------------------------------------------------------

    async def transcript(
        self, worker_id: str, start: int = 0, limit: int | None = None, *, run_id: str | None = None
    ) -> TranscriptPage:
        """Entries `start` to `start + limit` of a Worker's transcript; with `run_id`, only that run's entries.

        A run's entries are contiguous (its input's at the run's `input_sequence`, then its outputs), so a page of
        one run costs O(page) too: `start` is still a transcript sequence (the run's entries from there on),
        `total_items` counts the run's entries and `next_start` is the sequence after the last one returned while
        more of them remain, else None.

        Raises:
            InvalidRequestError: negative `start`, `limit` below 1, or a `run_id` that breaks the id pattern.
            LimitTooLargeError: `limit` above `max_page`.
            RunNotFoundError: the Worker has no run `run_id`.
            InvalidWorkerIdError, WorkerNotFoundError, StoreCorruptError.
        """
        if run_id is not None and not is_valid_id(run_id):
            if not (type(worker_id) is str and worker_id in self._registry.workers):
                check_worker_id(worker_id)  # a bad worker id is reported first, as over HTTP
            raise InvalidRequestError(invalid_id_message("run_id"), details={"field": "run_id"})
        record = self._worker(worker_id)
        if not is_int(start) or start < 0:
            raise InvalidRequestError(f"start must be an integer >= 0, not {start!r}", details={"field": "start"})
        size = page_limit(limit, self.limits)
        wid = record.worker_id
        if run_id is None:
            first, total = 0, record.transcript_len
        else:
            first, total = await self._run_entries(record, await self._find_run(record, run_id))
        end = first + total  # the sequence after the last entry of the page's range
        lo = max(start, first)
        try:
            records = await self._store.read_transcript(wid, lo, min(size, max(end - lo, 0)))
        except StoreCorruptError as exc:
            raise self._diagnostics.mark_corrupt(wid, exc) from None
        last = lo + len(records)
        return TranscriptPage(
            worker_ref=self._ref(wid),
            start=start,
            limit=size,
            total_items=total,
            items=[r.to_wire() for r in records],
            next_start=last if records and last < end else None,
        )

    async def _run_entries(self, record: WorkerRecord, run: RunRecord) -> tuple[int, int]:
        """The sequence of a run's first entry and how many it has: counted on the run once it has ended; an active
        run's go up to the Worker's `transcript_len`. A run recorded before runs counted their entries is bounded by
        the next run when that is the Worker's, else counted by reading its entries (once, O(its entries))."""
        first = run.input_sequence
        if first is None:  # queued, or ended without starting: no entries
            return 0, 0
        if run.entries is not None:
            return first, run.entries
        active = record.active_run
        if active is run or (active is None and record.last_run is run):
            return first, record.transcript_len - first
        if active is not None and record.last_run is run:
            return first, (active.input_sequence or first) - first
        count = 0
        page = self.limits.max_page
        wid = record.worker_id
        try:
            while True:
                found = await self._store.read_transcript(wid, first + count, page)
                for entry in found:
                    if entry.run_id != run.run_id:
                        return first, count
                    count += 1
                if len(found) < page:
                    return first, count
        except StoreCorruptError as exc:
            raise self._diagnostics.mark_corrupt(wid, exc) from None

    def open_deltas(self, *, worker_id: str | None = None, run_id: str | None = None) -> DeltaSubscription:
        """Follow the entries runs are producing (only `worker_id`'s, only its run `run_id`'s, when given): see
        `DeltaSubscription`. Close it when done (it is a context manager); an open one costs a few bytes per entry
        in progress.

        Raises:
            InvalidRequestError: a bad `worker_id` or `run_id`, or `run_id` without `worker_id` (a Worker that does
                not exist, or no longer does, is fine: nothing matches until it does).
            RuntimeUnavailableError: the Runtime has not started, or has closed.
        """
        self._require_started()
        if worker_id is not None and not is_valid_id(worker_id):
            raise InvalidRequestError(invalid_id_message("worker_id"), details={"field": "worker_id"})
        if run_id is not None:
            if not is_valid_id(run_id):
                raise InvalidRequestError(invalid_id_message("run_id"), details={"field": "run_id"})
            if worker_id is None:
                raise InvalidRequestError("run_id needs worker_id", details={"field": "run_id"})
        return self._supervisor.hub.subscribe(
            str(worker_id) if worker_id is not None else None, str(run_id) if run_id is not None else None
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
        size = self._event_page_size(after, limit, worker_id)
        max_wait = self.limits.max_wait_s
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= max_wait:
            raise InvalidRequestError(
                f"wait must be 0 to {max_wait:g} seconds, not {wait!r}", details={"field": "wait"}
            )
        self._check_cursor_known(after)
        journal = self._journal
        try:
            # A long-poll arms its signal before each read: an event confirmed while the store reads (in a thread,
            # say) sets it, so the wait below returns at once and the next read finds the event.
            signal = journal.arm() if wait > 0 else None
            records = await self._store.read_events(after, size + 1, worker_id)
            if not records and signal is not None:
                deadline = anyio.current_time() + wait
                while not records and self._state == "running":
                    remaining = deadline - anyio.current_time()
                    if remaining <= 0:
                        break
                    await journal.wait_armed(signal, remaining)
                    signal = journal.arm()
                    records = await self._store.read_events(after, size + 1, worker_id)
        except StoreCorruptError as exc:  # the store's own words may quote the damage: log them
            raise self._diagnostics.event_log_corrupt(exc) from None
        has_more = len(records) > size
        if has_more:
            del records[size:]
        rid = self.runtime_id
        return EventPage(
            events=[r.to_wire(rid) for r in records],
            next_after=records[-1].id if records else after,
            has_more=has_more,
        )

    async def read_stream(
        self, after: int = 0, limit: int | None = None, *, worker_id: str | None = None, run_id: str | None = None
    ) -> StreamPage:
        """What an event stream sends next: events with id above `after` in id order, those of `input_accepted` and
        `transcript_appended` with their transcript entry inline (`StreamEvent.entry`), optionally only those naming
        `worker_id`, and of them only those of `run_id`.

        `next_after` is the newest id the read looked at, matching or not: read on from it. With `run_id` the cost
        is that Worker's events (a read looks at a few pages of them at most, and may answer none with
        `has_more`). A deleted Worker's id is accepted: its events stay readable (their entries are null).

        Raises:
            InvalidRequestError: negative `after`, `limit` below 1, a bad `worker_id` or `run_id`, `run_id` without
                `worker_id` (``details["field"]`` ``run_id``), or `after` above the newest event id
                (``details["newest_id"]``).
            LimitTooLargeError: `limit` above `max_page`.
            CursorExpiredError: `after` is older than the events kept (`details["oldest_id"]`).
        """
        self._require_started()
        size = self._event_page_size(after, limit, worker_id)
        if run_id is not None:
            if not is_valid_id(run_id):
                raise InvalidRequestError(invalid_id_message("run_id"), details={"field": "run_id"})
            if worker_id is None:
                raise InvalidRequestError(
                    "run_id needs worker_id: a run's events are read among its Worker's", details={"field": "run_id"}
                )
        self._check_cursor_known(after)
        try:
            events, last, has_more = await read_frames(
                self._store, after, size, worker_id, run_id, self.runtime_id, self._diagnostics.mark_corrupt
            )
        except StoreCorruptError as exc:  # of the event log (a corrupt transcript is marked, its entries null)
            raise self._diagnostics.event_log_corrupt(exc) from None
        return StreamPage(events=events, next_after=last, has_more=has_more)

    @property
    def newest_event_id(self) -> int:
        """The newest event id the store holds: where a live-only stream starts."""
        return self._journal.newest_id

    def event_signal(self) -> anyio.Event:
        """An event set by the next confirmed write, and at shutdown once `runtime_stopping` is logged (or could
        not be). Take it before a read, then wait on it: a write confirmed while reading still wakes the reader.

        Raises:
            RuntimeUnavailableError: the Runtime has not started, or is closed.
        """
        self._require_started()
        return self._journal.arm()

    @property
    def stream_bound(self) -> int | None:
        """None until `close` stages `runtime_stopping`; then its id. A stream sends no event at or above it but
        that `runtime_stopping` itself: it ends with `stopping_frame` (events logged later are read after a
        restart). It is known before any event above it can be read."""
        return self._stream_bound

    @property
    def stopping_frame(self) -> StreamEvent | None:
        """None until `close` has logged `runtime_stopping`; then that event as a stream frame (with id 0 when
        it could not be logged). A stream sends it and ends; events logged after it are read after a restart."""
        record = self._stopping_record
        return frame(record, self.runtime_id) if record is not None else None

    async def summary(self) -> RuntimeSummary:
        """What this Runtime says about itself: identity, status, store, worker counts, limits, capabilities.

        Raises:
            RuntimeUnavailableError: the Runtime has not started (its id may not be known yet).
        """
        if self._state == "new":
            raise RuntimeUnavailableError("the Runtime has not started")
        counts = self._registry.counts
        runs, tokens_in, tokens_out = self._registry.usage
        return RuntimeSummary(
            runtime_id=self.runtime_id,
            display_name=self.display_name,
            version=__version__,
            status="running" if self._state == "running" else "stopping",
            started_at=format_time(self._started_at),
            store=self._store.info,
            workers=WorkerCounts(
                idle=counts["idle"], busy=counts["busy"], stopped=counts["stopped"], total=len(self._registry.workers)
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
        return list(self._diagnostics.entries)

    # --- internals -------------------------------------------------------------------------------------------

    async def _hold_task_group(self, ready: anyio.Event) -> None:
        """The Runtime's own task: it holds the task group that stops (and, under trio, runs) are spawned in, from
        `start` until `close` releases it."""
        try:
            async with anyio.create_task_group() as tg:
                self._supervisor.started(tg)
                ready.set()
                await self._release.wait()
        except Exception:  # its tasks catch everything: only a bug gets here
            logger.exception("the Runtime's task group failed")
        finally:
            ready.set()
            self._runner_done.set()

    def _event_page_size(self, after: int, limit: int | None, worker_id: str | None) -> int:
        """Check an event read's cursor, page size and Worker filter; returns the page size."""
        if not is_int(after) or after < 0:
            raise InvalidRequestError(f"after must be an integer >= 0, not {after!r}", details={"field": "after"})
        size = page_limit(limit, self.limits)
        if worker_id is not None and not is_valid_id(worker_id):
            raise InvalidRequestError(invalid_id_message("worker_id"), details={"field": "worker_id"})
        return size

    def _check_cursor_known(self, after: int) -> None:
        """Refuse a cursor above the newest event id: what the store holds (a reader may see one before its writer
        resumes)."""
        newest = self._journal.newest_id
        if after > newest:
            raise InvalidRequestError(
                f"after ({after}) is above the newest event id ({newest}): the cursor is not from this event log "
                "(was the store reset?); read again from a cursor of at most newest_id",
                details={"field": "after", "newest_id": newest},
            )

    async def _settled_worker(self, worker_id: str) -> WorkerRecord:
        """`_worker`, decided on committed state: a change of it in flight is waited for first."""
        record = self._worker(worker_id)
        if self._registry.changing and record.worker_id in self._registry.changing:
            await self._registry.settle(record.worker_id)
            record = self._worker(record.worker_id)
        return record

    async def _find_run(self, record: WorkerRecord, run_id: str) -> RunRecord:
        """The run `run_id` of a Worker. A run id that is not an id at all names no run: `RunNotFoundError`, and
        the store never sees it."""
        if record.active_run is not None and record.active_run.run_id == run_id:
            return record.active_run
        if record.last_run is not None and record.last_run.run_id == run_id:
            return record.last_run
        if record.queued:
            queued = self._queue.find(record, run_id)
            if queued is not None:
                return queued
        try:
            run = await self._store.read_run(record.worker_id, run_id) if is_valid_id(run_id) else None
        except StoreCorruptError as exc:
            raise self._diagnostics.mark_corrupt(record.worker_id, exc) from None
        if run is None:
            shown = str(run_id)[:200]
            raise RunNotFoundError(f"worker {record.worker_id!r} has no run {shown!r}", details={"run_id": shown})
        return run

    async def _log(self, event: EventRecord) -> None:
        await self._journal.submit(Batch(event=event))

    def _require_started(self) -> None:
        if self._state not in ("running", "stopping"):
            raise RuntimeUnavailableError(f"the Runtime is {self._state}")

    def _require_running(self) -> None:
        if self._state != "running":
            raise RuntimeUnavailableError(f"the Runtime is {self._state}; it accepts no new work")

    def _worker(self, worker_id: str) -> WorkerRecord:
        # A key of `workers` passed the id check when its Worker was made: only a miss needs the pattern.
        workers = self._registry.workers
        record = workers.get(worker_id) if type(worker_id) is str else None
        if record is None:
            wid = check_worker_id(worker_id)
            self._require_started()
            record = workers.get(wid)  # a str subclass (a StrEnum member, say) finds its Worker here
            if record is None:
                raise WorkerNotFoundError(f"no worker {wid!r}", details={"worker_id": wid})
        elif self._state != "running" and self._state != "stopping":  # `_require_started`, inline: every read
            self._require_started()
        corrupt = self._diagnostics.corrupt
        damage = corrupt.get(worker_id) if corrupt else None
        if damage is not None:
            raise corrupt_error(worker_id, damage)
        return record

    def _ref(self, worker_id: str) -> WorkerRef:
        return WorkerRef(runtime_id=self.runtime_id, worker_id=worker_id)

    def _view(self, record: WorkerRecord) -> WorkerDetail:
        return worker_detail(record, self._ref(record.worker_id), self.display_name)


def _unknown_profile(name: str) -> WorkerRuntimeError:
    return UnknownProfileError(f"the worker's profile {name!r} no longer exists", details={"profile": name})


#: A staged copy of a record with changes: what the store writes before the live record changes.
_replace = msgspec.structs.replace
