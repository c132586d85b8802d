"""The Worker registry: the committed Worker records, their ids in order, their counts and usage totals, and the
changes in flight.

Every change of a Worker's status goes through `transition`, which asks the lifecycle table for the next state: the
committed status stays in the Worker's record (what readers see), an in-flight state (``accepting``, ``stopping``,
``deleting``) is kept here beside it, and nothing else in the Runtime sets a status.

A change of a Worker that is being written (through the journal, to a store whose writes suspend) marks its id as
changing until the store has confirmed or refused it: every other command on that Worker waits for the mark to go
and is then decided on committed state. A create or a delete of an id holds that mark too, so it is the id's
reservation: concurrent creates and deletes of one id are decided once, one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from .errors import IllegalTransitionError, OperationTimeoutError
from .journal import Journal
from .lifecycle import IN_FLIGHT_STATES, RESTING_STATES, STATUS_AFTER, WORKER_EVENTS, WorkerState, next_worker_state
from .records import WorkerRecord
from .stores.base import Batch

__all__ = ["Registry", "bounded_wait"]

# Plain copies of the lifecycle's read-only tables: a dict lookup is cheaper than a mappingproxy's.
_RESTING: dict[str, WorkerState] = dict(RESTING_STATES)
#: Every Worker event -> the committed status it sets, or None: a subscript (no ``.get``) per transition.
_STATUS_AFTER: dict[str, str | None] = {event: STATUS_AFTER.get(event) for event in WORKER_EVENTS}


class Registry:
    """Workers by id, kept in id order for paging, with their status counts and usage totals.

    Args:
        journal: the journal every change is written through.
        operation_timeout_s: how long a command waits for a change in flight before `OperationTimeoutError`.
    """

    __slots__ = (
        "_journal",
        "_order",
        "_order_dirty",
        "_unlisted",
        "changing",
        "counts",
        "creating",
        "operation_timeout_s",
        "states",
        "usage",
        "workers",
    )

    def __init__(self, journal: Journal, operation_timeout_s: float) -> None:
        self._journal = journal
        self.operation_timeout_s = operation_timeout_s
        self.workers: dict[str, WorkerRecord] = {}
        #: Worker ids with a change in flight (only with a store whose writes suspend); a create reserves its id.
        self.changing: dict[str, anyio.Event] = {}
        self.creating = 0  # creates in flight: they count toward max_workers
        self._order: list[str] = []  # worker ids; sorted unless _order_dirty
        self._order_dirty = False
        self._unlisted: set[str] = set()  # deleted ids still in _order (until the next sort drops them)
        self.counts: dict[str, int] = {"idle": 0, "busy": 0, "stopped": 0}
        self.usage = [0, 0, 0]  # runs, input tokens, output tokens
        #: worker id -> its lifecycle state, for Workers in an in-flight state only (the rest rest on their status).
        self.states: dict[str, WorkerState] = {}

    def restore(self, records: Iterable[WorkerRecord]) -> None:
        """Take the Workers a store kept."""
        for record in records:
            self.workers[record.worker_id] = record
            self._order.append(record.worker_id)
            self.counts[record.status] += 1
            self.usage[0] += record.runs
            self.usage[1] += record.input_tokens
            self.usage[2] += record.output_tokens
        self._order.sort()

    def add(self, record: WorkerRecord) -> None:
        """A created Worker, once its `worker_created` is committed."""
        wid = record.worker_id
        self.workers[wid] = record
        if wid in self._unlisted:  # deleted and re-created before the order was sorted: it is listed already
            self._unlisted.discard(wid)
        else:
            self._order.append(wid)
            self._order_dirty = True
        self.counts[record.status] += 1

    def remove(self, wid: str) -> None:
        """A deleted Worker, once `transition(record, "delete_committed")` has moved it to ``deleted``."""
        record = self.workers.pop(wid)
        self._unlisted.add(wid)
        self._order_dirty = True
        self.counts[record.status] -= 1

    def state(self, record: WorkerRecord) -> WorkerState:
        """The Worker's lifecycle state: its in-flight state, else the resting state of its committed status."""
        state = self.states.get(record.worker_id) if self.states else None
        return state if state is not None else _RESTING[record.status]

    def transition(self, record: WorkerRecord, event: str) -> WorkerState:
        """Move a Worker on `event` by the lifecycle table, applying the committed status the event sets.

        Raises:
            IllegalTransitionError: the table has no such transition, or it would rest on a state the Worker's
                committed status contradicts (a bug either way).
        """
        wid = record.worker_id
        states = self.states
        current = states.get(wid) if states else None
        if current is None:
            current = _RESTING[record.status]
        target = next_worker_state(current, event)
        status = _STATUS_AFTER[event]
        if status is not None and status != record.status:
            counts = self.counts
            counts[record.status] -= 1
            counts[status] += 1
            record.status = status
        if target in IN_FLIGHT_STATES:
            states[wid] = target
        else:
            if current in IN_FLIGHT_STATES:
                del states[wid]
            if target != "deleted" and _RESTING[record.status] != target:
                raise IllegalTransitionError("worker", current, event)
        return target

    def sorted_ids(self) -> list[str]:
        """Every worker id in order (it may name a Worker deleted since: look each up)."""
        if self._order_dirty:
            if self._unlisted:
                unlisted = self._unlisted
                self._order = [wid for wid in self._order if wid not in unlisted]
                self._unlisted = set()
            self._order.sort()  # a sorted run plus a short tail: Timsort merges it in linear time
            self._order_dirty = False
        return self._order

    async def settle(self, wid: str) -> None:
        """Wait until no change to Worker `wid` is in flight (each wait bounded by `operation_timeout_s`)."""
        changing = self.changing.get(wid)
        while changing is not None:
            await bounded_wait(changing, self.operation_timeout_s, f"a change to worker {wid!r}")
            changing = self.changing.get(wid)

    async def settle_quietly(self, wid: str) -> None:
        """Wait, unbounded, until no change to Worker `wid` is in flight: a run's own writes (and a queue's) stage
        their change after this, in the same step as they submit it, so a change committed meanwhile (an input
        queued behind the run) is never overwritten by a copy staged before it."""
        changing = self.changing.get(wid)
        while changing is not None:
            await changing.wait()
            changing = self.changing.get(wid)

    async def write_change(
        self, record: WorkerRecord, batch: Batch, begin: str, committed: str, refused: str, at_once: tuple[str, ...]
    ) -> None:
        """Write one change of Worker `record` and move it by the lifecycle table: `begin` while the write is in
        flight, then `committed`, or `refused` (and the store's error re-raised: nothing changed). A store whose
        writes never suspend writes it in one step, with nothing in flight between: the events `at_once` follow.

        Raises:
            RuntimeUnavailableError: the store refused the write.
        """
        journal = self._journal
        if journal.suspends:
            self.transition(record, begin)
            try:
                await self.commit(record.worker_id, batch)
            except BaseException:
                self.transition(record, refused)
                raise
            self.transition(record, committed)
        else:
            journal.append_now(batch)
            for event in at_once:
                self.transition(record, event)

    async def commit(self, wid: str, batch: Batch) -> None:
        """Write one change of Worker `wid` through the journal, for a store that suspends (else the callers use
        `Journal.append_now`). While it is in flight, other commands on that Worker wait for it; the caller applies
        the change once this returns."""
        changing = self.changing.get(wid)
        while changing is not None:  # one change per Worker at a time (the callers already wait; this is a guard)
            await changing.wait()
            changing = self.changing.get(wid)
        marker = self.changing[wid] = anyio.Event()
        try:
            await self._journal.submit(batch)
        finally:
            del self.changing[wid]
            marker.set()


async def bounded_wait(event: anyio.Event, limit: float, what: str) -> None:
    """Wait for `event` at most `limit` seconds; past it raise `OperationTimeoutError` (the work goes on)."""
    with anyio.move_on_after(limit) as scope:
        await event.wait()
    if scope.cancelled_caught:
        raise OperationTimeoutError(f"{what} is still under way after {limit:g}s; it will complete")
