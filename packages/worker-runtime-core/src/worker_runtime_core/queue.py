"""A Worker's queued runs and how they start: input accepted behind the active run (``on_busy="enqueue"``), the
hand-over to the next queued run when a run ends, the cancel of a queued run, and ``on_busy="interrupt"``.

What is committed lives in the Worker's record (`WorkerRecord.queued`, in acceptance order: ids, kind and times
only): every change of it is written through the journal with the Worker's state, so the queue survives a
restart (the log is authoritative). An input's content is written once, with its ``input_accepted``
(`Batch.queued_content`): the store keeps it until the run starts or ends, and the handle holds it meanwhile.
Here are the Runtime-side handles of those runs (an `ActiveRun` each, born ``queued``), so that `wait_for_run`
and cancel find them and the same handle becomes the active run when it starts.

A Worker with queued runs is ``busy`` even between the end of one run and the start of the next: the run's end is
staged ``busy`` (``run_handed_over``), and the next run's ``run_started`` (with its input's transcript entry) is
written right after, in the same step of the ended run's task. At shutdown nothing starts: queued runs stay queued
and start after the restart (`start_all`, once the interrupted runs of the start-up are written).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import msgspec

from .errors import QueueFullError, WorkerRuntimeError
from .lifecycle import STATUS_AFTER
from .models import RunError
from .records import (
    EventRecord,
    InputAcceptedData,
    InputKeyRecord,
    QueuedInput,
    RunEndedData,
    RunRecord,
    RunStartedData,
    TranscriptRecord,
    WorkerRecord,
)
from .registry import bounded_wait
from .runs import ActiveRun
from .stores.base import Batch
from .times import now

if TYPE_CHECKING:
    from .keys import InputKeys
    from .profiles import ProfileTable
    from .supervisor import Supervisor

__all__ = ["RunQueue", "INTERRUPTED_BY_INPUT"]

logger = logging.getLogger("worker_runtime_core")

#: The reason of a run cancelled by an input with ``on_busy="interrupt"``.
INTERRUPTED_BY_INPUT = "interrupted_by_input"
_ENDED_STATUS = STATUS_AFTER["run_ended"]  # a Worker whose last queued run ended, with nothing active
_HANDING_OVER = frozenset({"running", "stopping"})  # where the end of a run leaves a Worker with runs queued busy
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0


class RunQueue:
    """The queued runs of every Worker: their handles, how they are accepted, started and ended.

    Args:
        supervisor: the runs in flight (a started queued run becomes one of them).
        profiles: where a queued run's profile is looked up when it starts.
        keys: the input keys (an enqueued input's `input_id` is remembered like any other).
    """

    __slots__ = ("frozen", "handles", "interrupting", "keys", "profiles", "sup")

    def __init__(self, supervisor: Supervisor, profiles: ProfileTable, keys: InputKeys) -> None:
        self.sup = supervisor
        self.profiles = profiles
        self.keys = keys
        #: worker id -> run id -> the handle of a queued run (in acceptance order, as `WorkerRecord.queued`).
        self.handles: dict[str, dict[str, ActiveRun]] = {}
        #: worker id -> inputs with ``on_busy="interrupt"`` waiting for the active run to end: it hands over to them,
        #: not to the queue.
        self.interrupting: dict[str, int] = {}
        #: Set at shutdown: no queued run starts any more (they stay queued, and start after the restart).
        self.frozen = False
        supervisor.queue = self

    # --- reads -----------------------------------------------------------------------------------------------

    def restore(self, records: list[WorkerRecord], contents: dict[str, str]) -> None:
        """Handles for the queued runs of the Workers a store kept, with their inputs' content (by run id; a run
        whose content the store did not keep ends ``failed`` when its turn comes, never run without it)."""
        for record in records:
            for queued in record.queued:
                self._add(record, queued, contents.get(queued.run_id, ""))

    def handle(self, wid: str, run_id: str) -> ActiveRun | None:
        """The handle of Worker `wid`'s queued run `run_id`, or None."""
        handles = self.handles.get(wid) if self.handles else None
        return handles.get(run_id) if handles else None

    @staticmethod
    def find(record: WorkerRecord, run_id: str) -> RunRecord | None:
        """The run `run_id` as it is while queued, or None when no queued run of the Worker has that id."""
        for queued in record.queued:
            if queued.run_id == run_id:
                return queued.to_run()
        return None

    def busy_run_id(self, record: WorkerRecord) -> str | None:
        """The run that makes a Worker busy: the active one, else (between two runs) the next queued one."""
        active = self.sup.active.get(record.worker_id)
        if active is not None:
            return active.record.run_id
        return record.queued[0].run_id if record.queued else None

    # --- enqueue ---------------------------------------------------------------------------------------------

    async def enqueue(
        self, record: WorkerRecord, content: str, kind: str, input_id: str | None, digest: bytes, max_queue: int
    ) -> tuple[str, int]:
        """Queue an input behind the Worker's active run; returns its run id and event id once it is durable.

        Raises:
            QueueFullError: `max_queue` runs are queued already (nothing changed).
            RuntimeUnavailableError: the store refused the write (nothing changed).
        """
        if len(record.queued) >= max_queue:
            raise QueueFullError(
                f"worker {record.worker_id!r} has {len(record.queued)} runs queued, its maximum (max_queue)",
                details={"max_queue": max_queue, "run_id": self.busy_run_id(record)},
            )
        sup = self.sup
        journal = sup.journal
        registry = sup.registry
        wid = record.worker_id
        if journal.suspends:
            journal.check()
        event_id = journal.take_id()
        clock = now()
        run_id = f"run-{event_id}"
        queued = QueuedInput(run_id=run_id, input_id=input_id, kind=kind, accepted_at=clock, event_id=event_id)
        staged = _replace(record, queued=(*record.queued, queued), last_event_id=event_id, updated_at=clock)
        key = None
        if input_id is not None:
            key = InputKeyRecord(
                worker_id=wid,
                input_id=input_id,
                digest=digest,
                run_id=run_id,
                input_sequence=None,
                event_id=event_id,
                created_at=clock,
                queued=True,
            )
            self.keys.reserve(wid, input_id, digest)
        batch = Batch(
            event=EventRecord(
                event_id, "input_accepted", wid, run_id, clock, InputAcceptedData(None, input_id, kind, True)
            ),
            worker=staged,
            input_key=key,
            queued_content=content,
        )
        try:
            await registry.write_change(record, batch, "enqueue", "enqueue_committed", "enqueue_refused", ("enqueued",))
        except BaseException:
            if key is not None:
                self.keys.forget(wid, input_id)  # type: ignore[arg-type]  # set with the key
            raise
        record.queued = staged.queued
        record.last_event_id = event_id
        record.updated_at = clock
        if key is not None:
            self.keys.remember(key, digest)
        self._add(record, queued, content)
        return run_id, event_id

    def _add(self, record: WorkerRecord, queued: QueuedInput, content: str) -> None:
        handle = ActiveRun(record, queued.to_run(), None, queued.kind, content)
        handle.move("queue")
        handles = self.handles.get(record.worker_id)
        if handles is None:
            handles = self.handles[record.worker_id] = {}
        handles[queued.run_id] = handle

    # --- start -----------------------------------------------------------------------------------------------

    def hands_over(self, record: WorkerRecord) -> bool:
        """Whether a run of this Worker that ends now hands over (the Worker stays busy): runs are queued behind it.

        Also while it is stopping: the Worker is committed ``busy`` until its last queued run has ended, so a stop
        refused before it ended them all (or a crash in the middle) leaves a Worker whose queued runs start in
        turn, never an ``idle`` one with runs queued that nothing starts."""
        return bool(record.queued) and self.sup.registry.state(record) in _HANDING_OVER

    def next_is_queued(self, record: WorkerRecord) -> bool:
        """After a run's end: whether the next queued run should start now (nothing active, no interrupting input
        waiting to take the slot, not shutting down)."""
        return (
            not self.frozen
            and bool(record.queued)
            and record.active_run is None
            and record.worker_id not in self.interrupting
            and record.worker_id not in self.sup.active
            and self.sup.registry.state(record) == "running"
        )

    async def start_all(self, records: list[WorkerRecord]) -> None:
        """Start-up: the first queued run of every Worker that has one starts (after the interrupted runs' ends)."""
        for record in records:
            if self.next_is_queued(record):
                await self.start_next(record)

    def resume(self, record: WorkerRecord) -> None:
        """Start the next queued run in the Runtime's task group, if one should start (an interrupting input gave
        up its slot)."""
        if self.next_is_queued(record):
            self.sup.spawn_task(self.start_next, record)

    async def start_next(self, record: WorkerRecord) -> None:
        """Start the Worker's next queued run: its ``run_started`` with its input's transcript entry, then its task.
        A run whose profile has vanished ends ``failed`` (``unknown_profile``) and the next one is tried. A write the
        store refuses is retried until it is written; at shutdown the run stays queued."""
        sup = self.sup
        journal = sup.journal
        registry = sup.registry
        wid = record.worker_id
        backoff = _RETRY_FIRST_S
        while self.next_is_queued(record):
            queued = record.queued[0]
            handle = self.handle(wid, queued.run_id)
            assert handle is not None
            profile = self.profiles.get(record.profile)
            try:
                if profile is None or not handle.content:
                    error = (
                        RunError(
                            code="unknown_profile",
                            message=f"the worker's profile {record.profile!r} no longer exists",
                        )
                        if profile is None
                        else RunError(code="store_corrupt", message="the store did not keep this queued input")
                    )
                    await self.end_queued(record, handle, "failed", error, None)
                    continue
                if journal.suspends:
                    await registry.settle_quietly(wid)
                    if not self.next_is_queued(record) or record.queued[0] is not queued:
                        continue
                    journal.check()
                batch = self._stage_start(record, queued, handle.content)
                await registry.write_change(
                    record, batch, "start", "start_committed", "start_refused", ("start", "start_committed")
                )
            except WorkerRuntimeError as exc:
                if backoff == _RETRY_FIRST_S:
                    logger.error("could not start queued run %s (retrying): %s", queued.run_id, exc.message)
                if sup.giving_up or self.frozen:
                    return  # it stays queued: it starts after the restart
                await journal.wait_writable(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)
                continue
            staged = batch.worker
            assert staged is not None and staged.active_run is not None
            run = staged.active_run
            record.active_run = run
            record.queued = staged.queued
            record.transcript_len = staged.transcript_len
            record.last_event_id = staged.last_event_id
            record.updated_at = staged.updated_at
            self._drop(wid, queued.run_id)
            handle.record = run
            handle.profile = profile
            handle.move("start")
            sup.spawn(handle)
            return

    def _stage_start(self, record: WorkerRecord, queued: QueuedInput, content: str) -> Batch:
        journal = self.sup.journal
        event_id = journal.take_id()
        clock = now()
        sequence = record.transcript_len
        run = RunRecord(run_id=queued.run_id, input_sequence=sequence, started_at=clock)
        staged = _replace(
            record,
            active_run=run,
            queued=record.queued[1:],
            transcript_len=sequence + 1,
            last_event_id=event_id,
            updated_at=clock,
        )
        return Batch(
            event=EventRecord(
                event_id,
                "run_started",
                record.worker_id,
                queued.run_id,
                clock,
                RunStartedData(sequence, queued.input_id, queued.kind),
            ),
            worker=staged,
            entry=TranscriptRecord(
                sequence=sequence,
                role=queued.kind,
                content=content,
                run_id=queued.run_id,
                created_at=clock,
                event_id=event_id,
            ),
        )

    def _drop(self, wid: str, run_id: str) -> None:
        handles = self.handles.get(wid)
        if handles is not None:
            handles.pop(run_id, None)
            if not handles:
                del self.handles[wid]

    # --- end without starting --------------------------------------------------------------------------------

    async def end_queued(
        self, record: WorkerRecord, handle: ActiveRun, status: str, error: RunError | None, reason: str | None
    ) -> None:
        """End a queued run that never started (``cancelled``, or ``failed`` for a vanished profile): its terminal
        event, and the Worker without it (``idle`` when nothing is left to run).

        Raises:
            RuntimeUnavailableError: the store refused it (nothing changed: the run is still queued).
        """
        sup = self.sup
        journal = sup.journal
        registry = sup.registry
        wid = record.worker_id
        run_id = handle.record.run_id
        if journal.suspends:
            await registry.settle_quietly(wid)
            journal.check()
        queued = next((q for q in record.queued if q.run_id == run_id), None)
        if queued is None:  # it started, or ended, meanwhile
            return
        clock = now()
        final = RunRecord(
            run_id=run_id,
            input_sequence=None,
            started_at=queued.accepted_at,
            status=status,
            ended_at=clock,
            error=error,
            entries=0,
        )
        event = journal.event("run_" + status, wid, run_id, RunEndedData(final, reason))
        remaining = tuple(q for q in record.queued if q.run_id != run_id)
        idle = (  # the last run of a Worker ends (``idle`` even while stopping: nothing is left to start)
            record.active_run is None
            and not remaining
            and wid not in sup.active
            and registry.state(record) in _HANDING_OVER
        )
        staged = _replace(
            record,
            queued=remaining,
            status=_ENDED_STATUS if idle else record.status,
            last_event_id=event.id,
            updated_at=clock,
        )
        batch = Batch(event=event, worker=staged, ended_run=final)
        if journal.suspends:
            await registry.commit(wid, batch)
        else:
            journal.append_now(batch)
        if idle:
            registry.transition(record, "run_ended")
        record.queued = remaining
        record.last_event_id = event.id
        record.updated_at = clock
        self._drop(wid, run_id)
        handle.reason = reason
        handle.record = final
        handle.end_event_id = event.id
        handle.move("end")
        handle.move("end_committed")
        if error is not None:
            sup.diagnostics.diagnose("error", error.code, f"run {run_id} failed: {error.message}", wid)
        if handle.done is not None:
            handle.done.set()

    async def cancel(self, record: WorkerRecord, run_id: str, reason: str | None) -> ActiveRun | None:
        """Cancel the Worker's queued run `run_id` (it never starts); returns its handle once ended, None when no
        queued run has that id.

        Raises:
            RuntimeUnavailableError: the store refused it (the run stays queued).
        """
        handle = self.handle(record.worker_id, run_id)
        if handle is None:
            return None
        await self.end_queued(record, handle, "cancelled", None, reason)
        return handle if handle.record.status == "cancelled" else None

    async def cancel_all(self, record: WorkerRecord, reason: str | None) -> list[str]:
        """A stop: cancel every queued run of the Worker, first to last; returns their ids."""
        ended: list[str] = []
        for queued in list(record.queued):
            handle = self.handle(record.worker_id, queued.run_id)
            if handle is None:
                continue
            await self.end_queued(record, handle, "cancelled", None, reason)
            if handle.record.status == "cancelled":
                ended.append(queued.run_id)
        return ended

    def release(self) -> None:
        """Shutdown: nobody waits for a queued run any more (it stays queued, on disk)."""
        for handles in self.handles.values():
            for handle in handles.values():
                if handle.done is not None:
                    handle.done.set()

    # --- interrupt -------------------------------------------------------------------------------------------

    async def interrupt(self, record: WorkerRecord, limit: float) -> None:
        """Cancel the Worker's active run (reason ``interrupted_by_input``) and wait until it has ended, at most
        `limit` seconds. The caller holds the slot (`interrupting`) from before this call until its own input is
        accepted or refused (`interrupted`).

        Raises:
            OperationTimeoutError: the run has not ended within `limit` seconds (it still ends cancelled).
        """
        sup = self.sup
        active = sup.active.get(record.worker_id)
        if active is None:
            return
        sup.request_end(active, "cancelled", INTERRUPTED_BY_INPUT)
        if not active.finished:
            if active.done is None:
                active.done = anyio.Event()
            await bounded_wait(active.done, limit, f"interrupting run {active.record.run_id}")

    def hold(self, wid: str) -> None:
        """An interrupting input takes the slot: the run that ends next hands over to it, not to the queue."""
        self.interrupting[wid] = self.interrupting.get(wid, 0) + 1

    def interrupted(self, record: WorkerRecord) -> None:
        """The interrupting input was accepted, or gave up: the slot goes back to the queue."""
        wid = record.worker_id
        left = self.interrupting.get(wid, 0) - 1
        if left > 0:
            self.interrupting[wid] = left
        else:
            self.interrupting.pop(wid, None)
        if record.worker_id in self.sup.registry.workers:
            self.resume(record)


#: A staged copy of a record with changes: what the store writes before the live record changes.
_replace = msgspec.structs.replace
