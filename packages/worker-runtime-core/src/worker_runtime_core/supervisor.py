"""The run supervisor: the active runs, their tasks, how they end (cancel, stop, timeout, shutdown), and the retry
of a terminal event the store refused, so every run gets exactly one terminal status."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._backends import RunSpawner
from .config import Limits
from .deltas import DeltaHub, OpenEntry
from .diagnostics import Diagnostics
from .engines.base import InputAnswer
from .errors import EngineError, IllegalTransitionError, InternalError, RuntimeUnavailableError, WorkerRuntimeError
from .journal import Journal
from .lifecycle import STATUS_AFTER
from .models import RunError, WorkerRef
from .records import RunEndedData, TranscriptAppendedData, TranscriptRecord, WorkerRecord, WorkerStoppedData
from .registry import Registry, bounded_wait
from .requests import Requests
from .runs import ActiveRun, Context, Stop, Writer
from .stores.base import Batch, RuntimeStore
from .times import now
from .wire import WorkerAck

if TYPE_CHECKING:
    from .queue import RunQueue

__all__ = ["Supervisor"]

logger = logging.getLogger("worker_runtime_core")

_ROLES = frozenset({"user", "system", "assistant", "tool"})
#: What a run's error says when its engine raised something other than `EngineError`.
_ENGINE_FAILED = "the engine failed; see the Runtime's log"
_RETRY_FIRST_S = 0.05  # a terminal event the store refused is retried after this (doubling) or once it writes again
_RETRY_MAX_S = 1.0
_ENDED_STATUS = STATUS_AFTER["run_ended"]  # what a staged record says once its run has ended
_HANDED_OVER_STATUS = STATUS_AFTER["run_handed_over"]  # ... when a queued run is next


class Supervisor:
    """Runs in flight, one per busy Worker, and the stops under way.

    Args:
        journal: the one door to the store's writes.
        registry: the Workers (for their status counts and changes in flight).
        diagnostics: where failed runs and unrecorded ends are reported.
        store: read for an engine's view of the transcript.
        limits: the Runtime's limits.
        ref: the worker ref of a worker id.
    """

    __slots__ = (
        "_ref",
        "_scope_type",
        "_spawner",
        "_tg",
        "active",
        "diagnostics",
        "giving_up",
        "hub",
        "journal",
        "limits",
        "queue",
        "registry",
        "requests",
        "stopping",
        "store",
    )

    def __init__(
        self,
        journal: Journal,
        registry: Registry,
        diagnostics: Diagnostics,
        store: RuntimeStore,
        limits: Limits,
        ref: Callable[[str], WorkerRef],
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.diagnostics = diagnostics
        self.store = store
        self.limits = limits
        self._ref = ref
        self.active: dict[str, ActiveRun] = {}
        self.stopping: dict[str, Stop] = {}
        self.hub = DeltaHub(journal.arm)  # the entries runs are writing, and the streams following them
        journal.on_notify = self.hub.wake_all  # a durable write wakes the waiting subscriptions too
        self.giving_up = False  # closing: a terminal event that still cannot be written is given up
        self.requests = Requests(self)  # the runs' requests for input
        self._tg: TaskGroup | None = None
        self._spawner: RunSpawner | None = None
        self._scope_type: type[anyio.CancelScope] = anyio.CancelScope  # the event loop's own, once started
        self.queue: RunQueue | None = None  # the Workers' queued runs (`RunQueue` sets itself here)

    def started(self, tg: TaskGroup) -> None:
        """Serve from now on, spawning in `tg` (on the Runtime's event loop)."""
        self._tg = tg
        self._spawner = RunSpawner(tg)
        self.requests.started(tg)
        # anyio.CancelScope() looks its event loop up on every call; a run's scope is made by the class it returns.
        self._scope_type = type(anyio.CancelScope())

    def worker_ref(self, wid: str) -> WorkerRef:
        """The worker ref of Worker `wid` (what a run's context names it by)."""
        return self._ref(wid)

    # --- a run's task ----------------------------------------------------------------------------------------

    def spawn(self, active: ActiveRun) -> None:
        """Start a run (its input is committed)."""
        self.active[active.worker.worker_id] = active
        spawner = self._spawner
        assert spawner is not None
        spawner.spawn(self.run, active)

    def spawn_task(self, func: Callable[[WorkerRecord], Coroutine[object, object, None]], record: WorkerRecord) -> None:
        """Run `func(record)` in the Runtime's task group (a queued run's start that no run's task does)."""
        if self._tg is not None:
            self._tg.start_soon(func, record)

    async def run(self, active: ActiveRun) -> None:
        """A run's task: the engine inside the run's cancel scope, then exactly one terminal state."""
        parked = False
        try:
            status = "completed"
            error: RunError | None = None
            profile = active.profile
            assert profile is not None
            active.parked = False  # a parked run that resumes (or ends) runs in this task now
            if active.end_status is None:
                timeout = profile.timeout_s
                left = active.remaining if active.remaining is not None else timeout  # a resumed run: what was left
                active.remaining = None
                scope = self._scope_type(deadline=anyio.current_time() + left if left is not None else math.inf)
                active.scope = scope
                answer, active.answer = active.answer, None
                try:
                    with scope:
                        if answer is None:
                            await profile.engine.run(Context(self, active))
                        else:
                            await profile.engine.resume(Context(self, active), answer)
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
                elif active.parked and error is None:
                    # The engine parked (`park_for_input`) and returned: the run waits as data only, with no task,
                    # its own timeout paused; its answer resumes it, a cancel, stop or shutdown ends it.
                    parked = True
                    active.scope = None
                    if scope.deadline != math.inf:
                        active.remaining = max(scope.deadline - anyio.current_time(), 0.0)
                    if active.answer is not None:  # answered before the engine's call returned
                        self.resume(active, active.answer)
                    return
                active.parked = False
            else:
                status = active.end_status
            active.move("end")
            if self.journal.suspends:
                with anyio.CancelScope(shield=True):
                    await self.end_run(active, status, error)
                    queue = self.queue
                    if active.worker.queued and queue is not None and queue.next_is_queued(active.worker):
                        await queue.start_next(active.worker)  # in this step: the Worker stays busy
            else:
                await self.end_run(active, status, error)  # a memory write never suspends: nothing to shield
                queue = self.queue
                if active.worker.queued and queue is not None and queue.next_is_queued(active.worker):
                    await queue.start_next(active.worker)
        finally:
            if not active.finished and not parked:  # only a bug gets here: never leave waiters (or close) hanging
                logger.error("run %s ended without its terminal state", active.record.run_id)
                if active.state == "running":
                    active.move("end")
                active.move("abandon")
                self.active.pop(active.worker.worker_id, None)
                self.drop_entry(active)
                if active.done is not None:
                    active.done.set()

    async def end_run(self, active: ActiveRun, status: str, error: RunError | None, *, retry: bool = True) -> None:
        """Record the run's one terminal status, then show it. A terminal event the store cannot write is retried
        (as soon as the store writes again) until it is: meanwhile the run stays visibly ``running``. Only at
        shutdown, or with `retry` False (start-up), is it given up: the run stays ``running`` on disk and recovery
        marks it ``interrupted``."""
        wid = active.worker.worker_id
        reason = active.reason if status == "cancelled" else None
        journal = self.journal
        backoff = _RETRY_FIRST_S
        while True:
            try:
                requests = active.record.requests
                if requests and requests[-1].outcome is None:  # a waiting run: its request closes first, visibly
                    await self.requests.close(active, "closed")
                if active.entry is not None:  # nothing a viewer saw disappears: its text first, then the end
                    await self.flush_entry(active)
            except WorkerRuntimeError as exc:
                if await self._end_refused(active, status, exc, backoff, retry):
                    return
                backoff = min(backoff * 2, _RETRY_MAX_S)
                continue
            if journal.suspends and self.registry.changing:  # staged after any change in flight (a queued input)
                await self.registry.settle_quietly(wid)
            batch = self._stage_end(active, status, error, reason)
            try:
                if journal.suspends:
                    await self.registry.commit(wid, batch)
                else:
                    journal.append_now(batch)
                break
            except WorkerRuntimeError as exc:
                if await self._end_refused(active, status, exc, backoff, retry):
                    return
                backoff = min(backoff * 2, _RETRY_MAX_S)
        self._end_committed(active, batch, error)

    def _stage_end(self, active: ActiveRun, status: str, error: RunError | None, reason: str | None) -> Batch:
        """The run's terminal event and its Worker's record once ended, staged (nothing is shown yet)."""
        record = active.worker
        run = active.record
        usage = run.usage
        clock = now()
        final = _replace(run, status=status, ended_at=clock, error=error)
        final.entries = record.transcript_len - (run.input_sequence or 0)  # a set costs less than one more keyword
        event = self.journal.event("run_" + status, record.worker_id, run.run_id, RunEndedData(final, reason))
        queue = self.queue
        staged = _replace(
            record,
            status=_HANDED_OVER_STATUS
            if queue is not None and record.queued and queue.hands_over(record)
            else _ENDED_STATUS,
            active_run=None,
            last_run=final,
            runs=record.runs + 1,
            input_tokens=record.input_tokens + (usage.input_tokens if usage is not None else 0),
            output_tokens=record.output_tokens + (usage.output_tokens if usage is not None else 0),
            last_event_id=event.id,
            updated_at=clock,
        )
        return Batch(event=event, worker=staged, ended_run=final)

    def _end_committed(self, active: ActiveRun, batch: Batch, error: RunError | None) -> None:
        """Show the run's end, once the store has its batch (from `_stage_end`)."""
        record = active.worker
        wid = record.worker_id
        run = active.record
        usage = run.usage
        event = batch.event
        staged = batch.worker
        final = batch.ended_run
        assert staged is not None and final is not None
        clock = staged.updated_at
        self.registry.transition(record, "run_ended" if staged.status == _ENDED_STATUS else "run_handed_over")
        record.active_run = None
        record.last_run = final
        record.runs = staged.runs
        record.input_tokens = staged.input_tokens
        record.output_tokens = staged.output_tokens
        record.last_event_id = event.id
        record.updated_at = clock
        totals = self.registry.usage
        totals[0] += 1
        if usage is not None:
            totals[1] += usage.input_tokens
            totals[2] += usage.output_tokens
        del self.active[wid]
        active.record = final
        active.end_event_id = event.id
        if error is not None:
            self.diagnostics.diagnose("error", error.code, f"run {run.run_id} failed: {error.message}", wid)
        active.move("end_committed")
        if active.done is not None:
            active.done.set()

    async def _end_refused(
        self, active: ActiveRun, status: str, exc: WorkerRuntimeError, backoff: float, retry: bool
    ) -> bool:
        """The store refused the run's end (its open entry or its terminal event): give it up (True) at shutdown or
        without `retry`, else wait to try again (False)."""
        run = active.record
        wid = active.worker.worker_id
        if backoff == _RETRY_FIRST_S:
            logger.error("could not record the end of run %s (retrying): %s", run.run_id, exc.message)
        if self.giving_up or not retry:
            self.diagnostics.diagnose(
                "error", "run_end_not_recorded", f"run {run.run_id} ended {status}: {exc.message}", wid
            )
            active.move("abandon")  # it stays active: recovery marks it interrupted
            self.drop_entry(active)
            if active.done is not None:
                active.done.set()
            return True
        active.move("end_refused")
        await self.journal.wait_writable(backoff)
        return False

    async def interrupt_on_start(self, records: list[WorkerRecord]) -> None:
        """End the runs the store had as active when it opened: ``interrupted``. Their events are submitted all at
        once (a store that group-commits writes them together), not one awaited write each."""
        if not self.journal.suspends:
            for record in records:
                await self._interrupt(record)
            return
        waiting = [record for record in records if _open_request(record)]
        if waiting:  # a run that was waiting closes its request first: two writes, through `end_run`
            records = [record for record in records if not _open_request(record)]
            for record in waiting:
                await self._interrupt(record)
        if self.journal.writes_many:  # one write of them all: no task, no wait per run
            await self._interrupt_together(records)
            return
        async with anyio.create_task_group() as tg:
            for record in records:
                tg.start_soon(self._interrupt, record)

    async def _interrupt_together(self, records: list[WorkerRecord]) -> None:
        """`interrupt_on_start` through the journal's `submit_many`: every run end staged, written as one batch
        list, then shown (or, refused, given up as `end_run` does without retry: recovery marks it again)."""
        if not records:
            return
        staged: list[tuple[ActiveRun, Batch]] = []
        changing = anyio.Event()  # while they are written, other changes to these Workers wait (one event for all)
        for record in records:
            run = record.active_run
            assert run is not None
            active = ActiveRun(record, run, None, "user", "")
            wid = record.worker_id
            self.active[wid] = active
            self.registry.changing[wid] = changing
            active.move("end")
            staged.append((active, self._stage_end(active, "interrupted", None, None)))
        results: list[RuntimeUnavailableError | None] | list[WorkerRuntimeError]
        try:
            results = await self.journal.submit_many([batch for _, batch in staged])
        except WorkerRuntimeError as exc:
            results = [exc] * len(staged)
        finally:
            for active, _ in staged:
                del self.registry.changing[active.worker.worker_id]
            changing.set()
        for (active, batch), refused in zip(staged, results, strict=True):
            if refused is None:
                self._end_committed(active, batch, None)
            else:
                await self._end_refused(active, "interrupted", refused, _RETRY_FIRST_S, False)
                self.active.pop(active.worker.worker_id, None)

    async def _interrupt(self, record: WorkerRecord) -> None:
        run = record.active_run
        assert run is not None
        active = ActiveRun(record, run, None, "user", "")
        self.active[record.worker_id] = active
        active.move("end")
        await self.end_run(active, "interrupted", None, retry=False)
        if not active.finished or record.active_run is not None:
            self.active.pop(record.worker_id, None)

    async def append_output(
        self, active: ActiveRun, role: str, content: str, open_entry: OpenEntry | None = None
    ) -> int:
        """Append an engine's transcript entry; returns its sequence once it is durable. `open_entry` is the hub's entry
        in progress this commits, marked with its event's id while the write is in flight."""
        if role not in _ROLES:
            raise ValueError(f"role must be one of {sorted(_ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"content must be a str, not {type(content).__name__}")
        record = active.worker
        if self.registry.changing and self.journal.suspends:  # staged after any change in flight (a queued input)
            await self.registry.settle_quietly(record.worker_id)
        sequence = record.transcript_len
        event = self.journal.event(
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
        if self.journal.suspends:
            if open_entry is not None:
                open_entry.commit_id = event.id
            try:
                await self.registry.commit(record.worker_id, batch)
            finally:
                if open_entry is not None:
                    open_entry.commit_id = None
        else:
            self.journal.append_now(batch)
        record.transcript_len = sequence + 1
        record.last_event_id = event.id
        record.updated_at = event.created_at
        return sequence

    async def commit_entry(self, active: ActiveRun, writer: Writer) -> int:
        """Commit the run's entry in progress (`Writer.end`, or the run's end): its whole text, through the journal
        like `append_output`. Once the store has it, it leaves the hub (the moment it becomes visible). A refused
        write changes nothing: the entry stays open."""
        entry = writer.entry
        sequence = await self.append_output(active, writer.role, entry.text, entry)
        active.entry = None
        self.hub.remove(active.worker.worker_id, entry)
        writer.committed(sequence)
        return sequence

    async def flush_entry(self, active: ActiveRun) -> None:
        """The run is ending with an entry open: commit what it has written, or drop it if it has no text.

        Raises:
            RuntimeUnavailableError: the store refused it (the entry stays open, to be tried again).
        """
        writer = active.entry
        assert writer is not None
        if writer.entry.length:
            await self.commit_entry(active, writer)
        else:
            self.drop_entry(active)

    def drop_entry(self, active: ActiveRun) -> None:
        """The run's entry in progress, if any, leaves the hub uncommitted (its run has ended without it)."""
        writer = active.entry
        if writer is not None:
            active.entry = None
            self.hub.remove(active.worker.worker_id, writer.entry)

    # --- ending a run from outside ---------------------------------------------------------------------------

    def request_end(self, active: ActiveRun, status: str, reason: str | None) -> None:
        """Ask a run to end with `status` (cancel, stop, shutdown); a run that has decided is left alone."""
        if active.decided or active.end_status is not None:
            return
        active.end_status = status
        active.reason = reason
        if active.scope is not None:
            active.scope.cancel()
        elif active.parked:  # a run waiting with no task: its end gets a task of its own
            active.parked = False
            spawner = self._spawner
            assert spawner is not None
            spawner.spawn(self.run, active)

    def resume(self, active: ActiveRun, answer: InputAnswer) -> None:
        """A parked run's request closed with `answer`: the engine's `resume` goes on in a task of its own."""
        active.parked = False
        active.answer = answer
        spawner = self._spawner
        assert spawner is not None
        spawner.spawn(self.run, active)

    async def wait_run(self, active: ActiveRun) -> None:
        """Wait until the run has ended (or its end was given up)."""
        if active.finished:
            return
        if active.done is None:
            active.done = anyio.Event()
        await active.done.wait()

    async def cancel(self, record: WorkerRecord, run_id: str | None, reason: str | None) -> ActiveRun | None:
        """Cancel the Worker's active run (only if it is `run_id`, when given) and wait until it has ended; returns
        it if it ended ``cancelled``, None when nothing was cancelled (no run, another run, a stopped Worker, or
        the run ended otherwise first).

        Raises:
            OperationTimeoutError: the run has not ended within `operation_timeout_s` (it still ends cancelled).
        """
        active = self.active.get(record.worker_id)
        if record.status == "stopped" or active is None or (run_id is not None and run_id != active.record.run_id):
            return None
        self.request_end(active, "cancelled", reason)
        if not active.finished:  # answer once the run is gone; it goes even if we stop waiting
            if active.done is None:
                active.done = anyio.Event()
            await bounded_wait(active.done, self.limits.operation_timeout_s, f"cancelling run {active.record.run_id}")
        if self.registry.changing:  # a queued run starting in its place: answer once it has
            await self.registry.settle(record.worker_id)
        return active if active.record.status == "cancelled" else None

    # --- stop ------------------------------------------------------------------------------------------------

    def closing(self) -> None:
        """The Runtime's task group is about to exit (every run has ended): no stop begins from now on."""
        self._tg = None
        if self._spawner is not None:
            self._spawner.close()
        self.requests.closing()

    def begin_stop(self, record: WorkerRecord, reason: str | None) -> Stop:
        """Start stopping a Worker in the Runtime's task group; callers wait for the returned stop's `done`.

        Raises:
            RuntimeUnavailableError: the Runtime is closing (its task group is exiting).
        """
        if self._tg is None:
            raise RuntimeUnavailableError("the Runtime is closing; it stops no more workers")
        self.registry.transition(record, "stop")
        stop = self.stopping[record.worker_id] = Stop()
        self._tg.start_soon(self._stop, record, reason, stop)
        return stop

    async def _stop(self, record: WorkerRecord, reason: str | None, stop: Stop) -> None:
        wid = record.worker_id
        stopped = False
        try:
            with anyio.CancelScope(shield=True):
                cancelled = None
                active = self.active.get(wid)
                if active is not None:
                    self.request_end(active, "cancelled", reason or "worker stopped")
                    await self.wait_run(active)
                    if active.record.status == "cancelled":
                        cancelled = active.record.run_id
                await self.registry.settle(wid)
                if wid in self.active:  # closing: the run's end could not be recorded
                    raise RuntimeUnavailableError(f"the Runtime stopped before worker {wid!r} could stop")
                ended = [cancelled] if cancelled is not None else []
                if record.queued and self.queue is not None:  # every queued run ends too, never started
                    ended += await self.queue.cancel_all(record, reason or "worker stopped")
                    await self.registry.settle(wid)
                    cancelled = ended[0] if ended else None
                event = self.journal.event("worker_stopped", wid, None, WorkerStoppedData(reason, cancelled))
                staged = _replace(
                    record, status=STATUS_AFTER["stop_committed"], updated_at=event.created_at, last_event_id=event.id
                )
                batch = Batch(event=event, worker=staged)
                if self.journal.suspends:
                    await self.registry.commit(wid, batch)
                else:
                    self.journal.append_now(batch)
                self.registry.transition(record, "stop_committed")
                stopped = True
                record.updated_at = event.created_at
                record.last_event_id = event.id
            stop.ack = WorkerAck(
                worker_ref=self._ref(wid),
                status="stopped",
                cancelled_run_id=cancelled,
                event_id=event.id,
                cancelled_run_ids=ended,
            )
        except WorkerRuntimeError as exc:
            stop.error = exc
        except Exception:
            logger.exception("stopping worker %r failed", wid)
            stop.error = InternalError(f"stopping worker {wid!r} failed; the Runtime's log has the cause")
        finally:
            if not stopped:  # worker_stopped or a queued run's end was refused, or the run's end could not be written
                try:
                    self.registry.transition(record, "stop_abandoned" if record.status == "busy" else "stop_refused")
                except IllegalTransitionError:
                    logger.exception("stopping worker %r left it in an impossible state", wid)
                    stop.error = InternalError(f"stopping worker {wid!r} failed; the Runtime's log has the cause")
                else:
                    if record.queued and self.queue is not None:  # the runs the stop did not end stay queued, and
                        self.queue.resume(record)  # start in turn (not at shutdown: they start after the restart)
            del self.stopping[wid]
            stop.done.set()


def _open_request(record: WorkerRecord) -> bool:
    """The Worker's active run has an open request for input (it was waiting)."""
    run = record.active_run
    return run is not None and bool(run.requests) and run.requests[-1].outcome is None


#: A staged copy of a record with changes: what the store writes before the live record changes.
_replace = msgspec.structs.replace
