"""Requests for input: a run's open request (`OpenRequest`), how an engine asks (`Requests.ask`), how the Backend
answers (`Requests.respond`), how a request times out or closes with its run (`Requests.close`), and the index of a
Runtime's open requests (`Requests.page`).

A request lives in its run's record (`RunRecord.requests`, newest last; only the newest may be open, while the run
is ``waiting``), so everything an answer is checked against (which requests the run issued, how each closed, the
`response_id` of its answer) is written with the events that change it and survives a restart with the run. Every
change goes through the journal first and is shown once the store has it, like every other change of a Worker.
"""

from __future__ import annotations

import heapq
import logging
import math
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup

from ._backends import Wakeup
from .engines.base import InputAnswer
from .errors import (
    IdempotencyConflictError,
    InternalError,
    InvalidRequestError,
    RequestClosedError,
    RequestNotFoundError,
    WorkerRuntimeError,
)
from .records import (
    EventRecord,
    InputRequestedData,
    InputRespondedData,
    RequestRecord,
    RunRecord,
    WorkerRecord,
)
from .stores.base import Batch
from .times import now
from .wire import OpenRequest as OpenRequestInfo
from .wire import RequestsPage, RespondAck

if TYPE_CHECKING:
    from .runs import ActiveRun
    from .supervisor import Supervisor

__all__ = ["OpenRequest", "Requests", "check_answer"]

logger = logging.getLogger("worker_runtime_core")

_KINDS = frozenset({"approval", "question"})
_ANSWERED_STATUS = "running"  # what a run is once its request is answered (a respond ack's `status`)


class OpenRequest:
    """The engine's side of a run's open request: what it waits on, and the answer once one has come."""

    __slots__ = ("answer", "closing", "deadline", "done", "record")

    def __init__(self, record: RequestRecord, deadline: float, *, waits: bool = True) -> None:
        self.record = record
        self.deadline = deadline  # on the event loop's clock: past it the request times out
        #: Set once the request has closed (answered or timed out); None for a parked run (nothing awaits it).
        self.done: Wakeup | None = Wakeup() if waits else None
        self.answer: InputAnswer | None = None
        self.closing: anyio.Event | None = None  # set while a write that closes it is in flight: its outcome decides


def check_answer(kind: str, approved: object, content: object) -> None:
    """An answer fits the request's kind: an ``approval`` needs `approved` (a bool; `content` is a comment), a
    ``question`` needs `content` and takes no `approved`.

    Raises:
        InvalidRequestError: it does not (``details["field"]`` names what is wrong).
    """
    if approved is not None and not isinstance(approved, bool):
        raise InvalidRequestError("approved must be true, false or null", details={"field": "approved"})
    if content is not None and not isinstance(content, str):
        raise InvalidRequestError("content must be a string or null", details={"field": "content"})
    if kind == "approval":
        if approved is None:
            raise InvalidRequestError("an approval needs `approved` (true or false)", details={"field": "approved"})
    elif approved is not None:
        raise InvalidRequestError(
            "a question takes no `approved`; answer with `content`", details={"field": "approved"}
        )
    elif content is None:
        raise InvalidRequestError("a question needs `content`", details={"field": "content"})


class Requests:
    """The requests for input of one Runtime's runs."""

    __slots__ = ("_deadlines", "_sup", "_tg", "_timer", "_timer_wake", "open", "shutting_down")

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._tg: TaskGroup | None = None
        #: ``(deadline, opening event id)`` of the open requests (and of some closed since: skipped when due).
        self._deadlines: list[tuple[float, int]] = []
        self._timer: anyio.CancelScope | None = None  # the task that times requests out, while it runs
        self._timer_wake: anyio.Event | None = None  # set to make it look at the deadlines again
        #: The runs waiting for an answer, by the id of the event that opened their request (ascending).
        self.open: dict[int, ActiveRun] = {}
        #: Set when the Runtime closes: a run that asks from then on is interrupted at once.
        self.shutting_down = False

    def started(self, tg: TaskGroup) -> None:
        """The Runtime serves: the task that times requests out is started in `tg` when the first request opens."""
        self._tg = tg

    def closing(self) -> None:
        """The Runtime's task group is about to exit (every run has ended): the timer task ends."""
        self._tg = None
        if self._timer is not None:
            self._timer.cancel()

    # --- the engine's side ------------------------------------------------------------------------------------

    async def ask(self, active: ActiveRun, kind: str, prompt: str, data: Any, timeout_s: float | None) -> InputAnswer:
        """Open a request for input on the run and wait for its answer (see `RunContext.request_input`). The wait
        holds no timer of its own: one task of the Runtime times every request out (`_expire`)."""
        handle = await self._open(active, kind, prompt, data, timeout_s)
        assert handle.done is not None
        scope = active.scope  # the run's own timeout pauses while it waits
        remaining: float | None = None
        if scope is not None and scope.deadline != math.inf:
            remaining = scope.deadline - anyio.current_time()
            scope.deadline = math.inf
        try:
            await handle.done
        except BaseException:
            if handle.answer is None and active.end_status is None and active.request is handle:
                # The engine stopped waiting by itself (a scope of its own): the request closes with the wait. A run
                # that is being ended (cancel, stop, shutdown) closes it in its end instead.
                with anyio.CancelScope(shield=True):
                    try:
                        await self.close(active, "closed")
                    except WorkerRuntimeError:
                        logger.warning("could not close request %s; the run's end closes it", handle.record.request_id)
            raise
        finally:
            if remaining is not None and scope is not None:
                scope.deadline = anyio.current_time() + remaining
        answer = handle.answer
        assert answer is not None
        return answer

    async def park(self, active: ActiveRun, kind: str, prompt: str, data: Any, timeout_s: float | None) -> None:
        """Open a request for input on the run without waiting for it (see `RunContext.park_for_input`): once the
        engine's call returns, the run waits as data only, and its answer resumes the engine (`Supervisor.resume`).
        """
        await self._open(active, kind, prompt, data, timeout_s, waits=False)
        active.parked = True

    def _deliver(self, active: ActiveRun, handle: OpenRequest, answer: InputAnswer) -> None:
        """Hand a closed request's answer to its engine: wake the engine that awaits it, or resume a parked run
        (unless the run is ending: then nothing waits for it any more)."""
        handle.answer = answer
        if handle.done is not None:
            handle.done.set()
        elif active.parked and active.end_status is None:
            if active.scope is None:  # the engine's call has returned: the run waits as data only
                self._sup.resume(active, answer)
            else:  # answered before the engine's call returned: it resumes as soon as it has
                active.answer = answer

    async def _open(
        self, active: ActiveRun, kind: str, prompt: str, data: Any, timeout_s: float | None, *, waits: bool = True
    ) -> OpenRequest:
        """Check a request, commit its ``input_requested``, and show it: the run is ``waiting``."""
        sup = self._sup
        limits = sup.limits
        if kind not in _KINDS:
            raise InvalidRequestError(f"kind must be 'approval' or 'question', not {kind!r}", details={"field": "kind"})
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequestError("prompt must be a non-empty string", details={"field": "prompt"})
        if len(prompt) * 4 > limits.max_input_bytes and len(prompt.encode()) > limits.max_input_bytes:
            raise InvalidRequestError(
                f"prompt is larger than max_input_bytes ({limits.max_input_bytes})", details={"field": "prompt"}
            )
        if timeout_s is None:
            timeout = limits.request_timeout_s
        elif (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not timeout_s > 0
            or math.isnan(timeout_s)
        ):
            raise InvalidRequestError(
                f"timeout_s must be a positive number, not {timeout_s!r}", details={"field": "timeout_s"}
            )
        else:
            timeout = float(timeout_s)
        if data is not None:
            try:  # a plain JSON copy: what the store keeps and the Backend reads, detached from the engine's object
                encoded = msgspec.json.encode(data)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidRequestError(f"data must be JSON: {exc}", details={"field": "data"}) from None
            if len(encoded) > limits.max_input_bytes:
                raise InvalidRequestError(
                    f"data is larger than max_input_bytes ({limits.max_input_bytes}) as JSON", details={"field": "data"}
                )
            data = msgspec.json.decode(encoded)
        run = active.record
        requests = run.requests
        if active.request is not None or (requests and requests[-1].outcome is None):
            raise InvalidRequestError(
                f"run {run.run_id} has request {requests[-1].request_id} open; await its answer first",
                details={"request_id": requests[-1].request_id},
            )
        if self.shutting_down:
            sup.request_end(active, "interrupted", "runtime stopping")
        if active.end_status is not None:
            await anyio.lowlevel.checkpoint()  # the run is being ended: deliver it, open nothing
        if active.state != "running":
            raise InternalError(f"run {run.run_id} has ended; it asks for nothing more")
        journal = sup.journal
        record = active.worker
        wid = record.worker_id
        # A change of the Worker in flight (an input queued behind this run, a stop) is committed first, and this
        # one staged on top of it: a copy staged before it would write the Worker back without it.
        await sup.registry.settle_quietly(wid)
        run = active.record
        requests = run.requests
        event_id = journal.take_id()
        clock = now()
        request = RequestRecord(
            request_id=f"req-{event_id}",
            kind=kind,
            prompt=prompt,
            data=data,
            created_at=clock,
            expires_at=clock + timeout if timeout != math.inf else None,  # an infinite timeout never expires
            event_id=event_id,
        )
        event = EventRecord(event_id, "input_requested", wid, run.run_id, clock, InputRequestedData(request))
        requests = requests + (request,)
        staged_run = _replace(run, status="waiting", requests=requests)
        staged = _replace(record, active_run=staged_run, last_event_id=event_id, updated_at=clock)
        await self._write(wid, Batch(event=event, worker=staged))
        record.active_run = active.record = staged_run  # shown: the staged run is the live one from now on
        record.last_event_id = event_id
        record.updated_at = clock
        active.move("ask")
        deadline = anyio.current_time() + timeout
        handle = active.request = OpenRequest(request, deadline, waits=waits)
        self.open[event_id] = active
        if timeout != math.inf:
            self._schedule(deadline, event_id)
        return handle

    # --- timeouts ---------------------------------------------------------------------------------------------

    def _schedule(self, deadline: float, event_id: int) -> None:
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self.open) + 64:  # most are of requests closed since: keep the open ones only
            deadlines[:] = [(a.request.deadline, e) for e, a in self.open.items() if a.request is not None]
            heapq.heapify(deadlines)
        sooner = not deadlines or deadline < deadlines[0][0]
        heapq.heappush(deadlines, (deadline, event_id))
        if self._timer is None:
            if self._tg is not None:
                self._timer = anyio.CancelScope()
                self._tg.start_soon(self._expire, self._timer)
        elif sooner and self._timer_wake is not None:
            self._timer_wake.set()

    async def _expire(self, scope: anyio.CancelScope) -> None:
        """The Runtime's one timer of requests: each open request past its deadline is answered ``timed_out``."""
        deadlines = self._deadlines
        try:
            with scope:
                while True:
                    clock = anyio.current_time()
                    while deadlines and deadlines[0][0] <= clock:
                        _, event_id = heapq.heappop(deadlines)
                        active = self.open.get(event_id)
                        handle = active.request if active is not None else None
                        if active is None or handle is None or handle.record.event_id != event_id:
                            continue  # closed already
                        try:
                            with anyio.CancelScope(shield=True):
                                await self.close(active, "timed_out")
                        except WorkerRuntimeError as exc:  # the store refused: try again in a second
                            logger.warning("could not time out request %s: %s", handle.record.request_id, exc.message)
                            heapq.heappush(deadlines, (clock + 1.0, event_id))
                        clock = anyio.current_time()
                    wake = self._timer_wake = anyio.Event()
                    with anyio.move_on_after(deadlines[0][0] - clock if deadlines else math.inf):
                        await wake.wait()
        except Exception:  # only a bug gets here
            logger.exception("the timer of requests for input failed")
        finally:
            self._timer = None
            self._timer_wake = None

    # --- closing ----------------------------------------------------------------------------------------------

    async def close(self, active: ActiveRun, outcome: str) -> None:
        """Close the run's open request, if it still is: ``timed_out`` (answered for the engine as such, an approval
        as refused) or ``closed`` (its run is ending). Logs ``input_responded``; the run is ``running`` again.

        Raises:
            RuntimeUnavailableError: the store refused it (the request stays open).
        """
        handle = active.request
        while handle is not None and handle.closing is not None:  # an answer's write is in flight: wait for it
            await handle.closing.wait()
            handle = active.request
        run = active.record
        if not run.requests or run.requests[-1].outcome is not None:
            return
        request = run.requests[-1]
        approved = False if outcome == "timed_out" and request.kind == "approval" else None
        await self._commit_close(
            active,
            InputRespondedData(request.request_id, outcome, approved, None),
            outcome=outcome,
            approved=approved,
        )
        if handle is not None:  # (a run that is ending is not waiting for it any more: nothing to wake)
            self._deliver(active, handle, InputAnswer(outcome=outcome, approved=approved))  # type: ignore[arg-type]

    async def _commit_close(self, active: ActiveRun, data: InputRespondedData, **closed_as: Any) -> int:
        """Write the ``input_responded`` (`data`) that closes the run's newest request (its fields become
        `closed_as`), then show it; returns the event's id. While the write is in flight the request's `closing` is
        set, so another answer or close waits for its outcome instead of writing a second one."""
        sup = self._sup
        record = active.worker
        wid = record.worker_id
        handle = active.request
        marker = anyio.Event()
        if handle is not None:
            handle.closing = marker
        try:
            # A change of the Worker in flight (an input queued behind this run) is committed first, and this one
            # staged on top of it: a copy staged before it would write the Worker back without it.
            await sup.registry.settle_quietly(wid)
            run = active.record
            event = sup.journal.event("input_responded", wid, run.run_id, data)
            closed = _replace(run.requests[-1], closed_event_id=event.id, **closed_as)
            requests = run.requests[:-1] + (closed,)
            staged_run = _replace(run, status=_ANSWERED_STATUS, requests=requests)
            staged = _replace(record, active_run=staged_run, last_event_id=event.id, updated_at=event.created_at)
            await self._write(wid, Batch(event=event, worker=staged))
        finally:
            if handle is not None:
                handle.closing = None
            marker.set()
        record.active_run = active.record = staged_run
        record.last_event_id = event.id
        record.updated_at = event.created_at
        self.open.pop(closed.event_id, None)
        active.request = None
        active.move("answer")
        return event.id

    # --- the Backend's side -----------------------------------------------------------------------------------

    async def respond(
        self,
        record: WorkerRecord,
        run: RunRecord,
        request_id: str,
        approved: bool | None,
        content: str | None,
        response_id: str | None,
    ) -> RespondAck:
        """Answer the run's request `request_id` (the Runtime has checked the ids and settled the Worker).

        Raises:
            RequestNotFoundError: the run never issued it.
            InvalidRequestError: the answer does not fit the request's kind.
            RequestClosedError: it is closed (answered, timed out, or ended with its run), and this is not a repeat
                of the answer that closed it.
            IdempotencyConflictError: `response_id` closed it with another answer.
            RuntimeUnavailableError: the store refused the answer (nothing changed).
        """
        sup = self._sup
        wid = record.worker_id
        request = _find(run, request_id)
        if request is None:
            raise RequestNotFoundError(
                f"run {run.run_id} issued no request {request_id!r}",
                details={"run_id": run.run_id, "request_id": request_id},
            )
        check_answer(request.kind, approved, content)
        active = sup.active.get(wid)
        if active is not None and active.record.run_id != run.run_id:
            active = None
        handle = active.request if active is not None else None
        while active is not None and handle is not None and handle.closing is not None:
            await handle.closing.wait()  # a write closing it is in flight: decide on its outcome
            handle = active.request
            run = active.record
            found = _find(run, request_id)
            assert found is not None
            request = found
        ref = sup.worker_ref(wid)
        if (
            request.outcome is None
            and handle is not None
            and active is not None
            and active.state == "waiting"
            and handle.record.request_id == request_id
        ):
            event_id = await self._commit_close(
                active,
                InputRespondedData(request_id, "answered", approved, content),
                outcome="answered",
                approved=approved,
                content=content,
                response_id=response_id,
            )
            self._deliver(active, handle, InputAnswer(outcome="answered", approved=approved, content=content))
            return RespondAck(
                worker_ref=ref,
                run_id=run.run_id,
                request_id=request_id,
                status=_ANSWERED_STATUS,
                event_id=event_id,
                duplicate=False,
            )
        if response_id is not None and request.response_id == response_id and request.closed_event_id is not None:
            if request.approved is approved and request.content == content:
                return RespondAck(
                    worker_ref=ref,
                    run_id=run.run_id,
                    request_id=request_id,
                    status=_ANSWERED_STATUS,
                    event_id=request.closed_event_id,
                    duplicate=True,
                )
            raise IdempotencyConflictError(
                f"response_id {response_id!r} answered request {request_id} with another answer",
                details={"response_id": response_id, "request_id": request_id},
            )
        outcome = request.outcome or "closed"  # open on record only while its run is ending: closed with it
        raise RequestClosedError(
            f"request {request_id} of run {run.run_id} is closed ({outcome})",
            details={"request_id": request_id, "outcome": outcome},
        )

    # --- the index --------------------------------------------------------------------------------------------

    def page(self, after: int, size: int) -> RequestsPage:
        """Open requests whose opening event id is above `after`, in that order, at most `size`."""
        ids = sorted(self.open)
        start = bisect_right(ids, after)
        chunk = ids[start : start + size]
        ref = self._sup.worker_ref
        found: list[OpenRequestInfo] = []
        for event_id in chunk:
            active = self.open[event_id]
            run = active.record
            found.append(
                OpenRequestInfo(
                    worker_ref=ref(active.worker.worker_id), run_id=run.run_id, request=run.requests[-1].to_wire()
                )
            )
        more = start + size < len(ids)
        return RequestsPage(requests=found, next_after=chunk[-1] if more and chunk else None)

    async def _write(self, wid: str, batch: Batch) -> None:
        sup = self._sup
        if sup.journal.suspends:
            await sup.registry.commit(wid, batch)
        else:
            sup.journal.append_now(batch)


def _find(run: RunRecord, request_id: str) -> RequestRecord | None:
    for request in reversed(run.requests):
        if request.request_id == request_id:
            return request
    return None


#: A staged copy of a record with changes: what the store writes before the live record changes.
_replace = msgspec.structs.replace
