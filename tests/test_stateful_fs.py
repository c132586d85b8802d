"""A hypothesis state machine drives a Runtime over the real FS store through restarts, kills and power cuts.

Three Workers on an engine whose runs stay active until a rule lets them finish; rules create (also again after a
delete), feed them (with and without `input_id`, and two inputs with one `input_id` at once), finish, cancel, stop
and delete them, command every Worker at once, long-poll the event log while an input goes in, cut the process or
the power in the middle of an input's write, and restart the Runtime on the same directory in three ways: a
graceful close, a killed process (the files as the page cache holds them) and a power cut (only what was made
durable, by the `powerloss` layer under the store). A plain model of what was acknowledged is checked
after every step: event ids 1..n with none served twice and no gap, every event once served still there and the
same after any restart, exactly one terminal status per ended run and none for a running one, `interrupted` for
the runs active at a restart, every acknowledged input once in its Worker's transcript, every run findable with its
status, the listed Workers and the counts (never negative). Every call has a bound: one that does not answer within
it is a hang, and fails the example.

Busy strategies too: inputs queued behind the active run (``on_busy="enqueue"``, up to a small ``max_queue``),
interrupting ones, cancels of a queued run; the model keeps each Worker's queue: queued runs start in acceptance
order (each input once in the transcript, in that order), nothing acknowledged is lost across a restart (queued
runs stay queued and start after it), and a stop ends them all.

Requests for input too: inputs whose runs ask for approval, one request after another (each waits for an answer, or
times out at once), then end or stay held. Rules answer them (approved or not, with a `response_id` from a small set)
and answer again (the same answer: the first ack, ``duplicate``; another answer with its `response_id`:
``idempotency_conflict``; a closed request: ``request_closed``; a request id the run never issued:
``request_not_found``); cancels, stops, interrupts and restarts end waiting runs, and inputs queue behind them. The
model keeps every request: a waiting run has its `pending_request`, the open requests (``open_requests``) are the
model's in the order they opened, each request is closed by exactly one ``input_responded`` (answered, timed out,
or closed with its run) after it opened and before its run's end, what the engine was told is in its transcript, a
run waiting at a restart of any kind is ``interrupted`` with its request closed, and an acknowledged answer survives
every restart (its `response_id` still gets the first ack).

``WORKER_RUNTIME_STATEFUL_EXAMPLES`` and ``WORKER_RUNTIME_STATEFUL_STEPS`` set the examples per backend and the
steps per example (``tools/stateful_long.py`` runs many more).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from powerloss import PowerLoss

from worker_runtime_core import (
    Engine,
    IdempotencyConflictError,
    Limits,
    ProfileConfig,
    QueueFullError,
    RequestClosedError,
    RequestNotFoundError,
    RunContext,
    Runtime,
    RuntimeUnavailableError,
    WorkerBusyError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerNotStoppedError,
    WorkerStoppedError,
)
from worker_runtime_store_fs import FsRuntimeStore

BOUND = 10.0  # seconds; nothing here waits that long unless it hangs
EXAMPLES = int(os.environ.get("WORKER_RUNTIME_STATEFUL_EXAMPLES", "200"))
STEPS = int(os.environ.get("WORKER_RUNTIME_STATEFUL_STEPS", "10"))
WIDS = st.sampled_from(["a", "b", "c"])
INPUT_IDS = st.sampled_from([None, "i1", "i2"])
TERMINAL = {
    "run_completed": "completed",
    "run_cancelled": "cancelled",
    "run_interrupted": "interrupted",
    "run_failed": "failed",
}
MAX_QUEUE = 2
# An asking input's plan, one letter a request (`w` waits for an answer, `t` times out at once), then `h` if the run
# is then held like any other (until `finish`), else it completes.
PLANS = st.sampled_from(["w", "t", "wh", "ww", "tw"])
RESPONSE_IDS = st.sampled_from(["r1", "r2", None])
AT_ONCE = 1e-6  # seconds: a request's timeout that passes at once
# Small segments and frequent checkpoints, so that a few steps rotate the log and checkpoint (store-fs's own
# options; the Runtime's settings go through Limits).
STORE_OPTIONS: dict[str, Any] = {"segment_bytes": 4096, "checkpoint_every": 8}


@dataclass
class Request:
    """A request for input as the model has it: open (`outcome` None) or how it closed."""

    prompt: str
    request_id: str | None = None  # learned when it is seen open, or (one that timed out at once) from the log
    outcome: str | None = None  # answered | timed_out | closed
    approved: bool | None = None
    response_id: str | None = None
    event_id: int | None = None  # its answer's ack


def steps_of(content: str) -> str:
    """An asking input's requests (`w`, `t`), from its plan."""
    return content.split(" ")[0][len("ask") :].rstrip("h")


class FsMachine(RuleBasedStateMachine):
    portal: ClassVar[BlockingPortal]

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="stateful-fs-")) / "store"
        self.disk = PowerLoss(self.root).__enter__()
        self.release: dict[str, anyio.Event] = {}  # run id -> lets that run finish
        self.rt: Runtime | None = None
        self.serving: concurrent.futures.Future[None] | None = None
        self.closing: anyio.Event
        # The model: what the Runtime acknowledged.
        self.status: dict[str, str] = {}  # worker -> idle | busy | stopped
        self.active: dict[str, str] = {}  # worker -> its running run
        self.inputs: dict[str, list[tuple[str, str]]] = {}  # worker -> acknowledged (content, run id), in order
        self.runs: dict[str, dict[str, str]] = {}  # worker -> run id -> queued | running | completed | cancelled | ...
        self.queue: dict[str, list[tuple[str, str]]] = {}  # worker -> its queued (content, run id), in order
        self.keys: dict[tuple[str, str], str] = {}  # (worker, input_id) -> run id
        self.served: dict[int, tuple[str, str | None, str | None]] = {}  # event id -> (kind, worker, run)
        self.asks: dict[str, tuple[str, str]] = {}  # asking run -> (worker, content)
        self.requests: dict[str, list[Request]] = {}  # asking run -> its requests so far, in order
        self.starting: list[tuple[str, str]] = []  # (worker, run): asking runs started, not yet come to rest
        self.n = 0  # inputs sent, for distinct contents
        self.open()

    # --- the Runtime's lives -----------------------------------------------------------------------------------

    def engine(self) -> type[Engine]:
        machine = self

        class Held(Engine):
            name = "held"

            async def run(self, ctx: RunContext) -> None:
                if ctx.content.startswith("ask"):  # one request after another, each told to the transcript
                    plan = ctx.content.split(" ")[0]
                    for n, how in enumerate(steps_of(ctx.content)):
                        timeout = AT_ONCE if how == "t" else None
                        answer = await ctx.request_input("approval", f"{ctx.content} #{n}", timeout_s=timeout)
                        await ctx.emit(f"{answer.outcome} {answer.approved}")
                    if not plan.endswith("h"):
                        return
                release = machine.release.setdefault(ctx.run_id, anyio.Event())
                await release.wait()
                await ctx.emit(f"done {ctx.content}")

        return Held

    def open(self) -> None:
        """Start a Runtime on the directory, in a task of the portal that holds it open until `close`."""
        self.release = {}
        rt = Runtime(
            runtime_id="rt-s",
            store=FsRuntimeStore(self.root, **STORE_OPTIONS),
            limits=Limits(operation_timeout_s=BOUND / 2, max_queue=MAX_QUEUE),
            profiles={"default": ProfileConfig("held")},
            engines={"held": self.engine()},
        )
        started = threading.Event()

        async def serve(task_status: Any = None) -> None:
            self.closing = anyio.Event()
            async with rt:
                started.set()
                await self.closing.wait()

        self.serving = self.portal.start_task_soon(serve)
        # Start and close are bounded from this thread (a cancel scope around them would wrap the Runtime's own).
        if not started.wait(BOUND):
            self.serving.result(0)  # the start's own error, if it failed
            raise AssertionError("the Runtime did not start within the bound")
        self.rt = rt

    def close(self) -> None:
        serving, self.serving, self.rt = self.serving, None, None
        if serving is not None:
            self.portal.call(self.closing.set)
            try:
                serving.result(BOUND)
            except concurrent.futures.TimeoutError:
                raise AssertionError("the Runtime did not close within the bound") from None

    def teardown(self) -> None:
        try:
            self.close()
        finally:
            self.disk.__exit__(None, None, None)
            shutil.rmtree(self.root.parent, ignore_errors=True)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        async def bounded() -> Any:
            with anyio.fail_after(BOUND):
                return await fn(*args, **kwargs)

        return self.portal.call(bounded)

    def accepted(self, wid: str, content: str, input_id: str | None, ack: Any) -> None:
        assert not ack.duplicate and ack.run_id not in self.runs[wid]
        assert ack.event_id not in self.served
        self.inputs[wid].append((content, ack.run_id))
        self.runs[wid][ack.run_id] = "running"
        self.active[wid] = ack.run_id
        self.status[wid] = "busy"
        if input_id is not None:
            self.keys[(wid, input_id)] = ack.run_id

    def ended(self, wid: str, status: str, *, hand_over: bool = True) -> None:
        """The active run ended; the next queued one starts in its place (unless an interrupting input takes it)."""
        run_id = self.active.pop(wid)
        if self.runs[wid][run_id] == "waiting":  # its request closes with it
            self.requests[run_id][-1].outcome = "closed"
        self.runs[wid][run_id] = status
        if self.status[wid] == "busy" and hand_over and self.queue[wid]:
            content, next_id = self.queue[wid].pop(0)
            self.inputs[wid].append((content, next_id))
            self.runs[wid][next_id] = "running"
            self.active[wid] = next_id
            if next_id in self.asks:
                self.starting.append((wid, next_id))
        elif self.status[wid] == "busy" and (hand_over or not self.queue[wid]):
            self.status[wid] = "idle"

    def content(self) -> str:
        self.n += 1
        return f"c{self.n}"

    async def until(self, check: Callable[[], Awaitable[Any]]) -> Any:
        """`check`'s first answer that is not None, asked again after each durable write."""
        assert self.rt is not None
        while True:
            signal = self.rt.event_signal()
            found = await check()
            if found is not None:
                return found
            await signal.wait()

    def settle(self) -> None:
        """Let the asking runs that started come to rest: waiting for an answer, held, or completed (then the next
        queued run starts, and comes to rest in its turn)."""
        while self.starting:
            self.advance(*self.starting.pop(0))

    def advance(self, wid: str, run_id: str) -> None:
        """An asking run runs on (it started, or its request was answered): its requests that time out at once
        close, then it waits for the next one's answer, or is held, or completes."""
        rt = self.rt
        assert rt is not None
        content = self.asks[run_id][1]
        steps, requests = steps_of(content), self.requests[run_id]
        while len(requests) < len(steps) and steps[len(requests)] == "t":
            requests.append(Request(f"{content} #{len(requests)}", outcome="timed_out", approved=False))
        if len(requests) < len(steps):
            prompt = f"{content} #{len(requests)}"

            async def asks() -> Any:
                run = await rt.get_run(wid, run_id)
                assert run.status in ("running", "waiting"), f"run {run_id} ended {run.status} instead of asking"
                pending = run.pending_request
                return pending if pending is not None and pending.prompt == prompt else None

            pending = self.call(self.until, asks)
            assert pending.kind == "approval" and pending.expires_at is not None
            requests.append(Request(prompt, request_id=pending.request_id))
            self.runs[wid][run_id] = "waiting"
        elif content.split(" ")[0].endswith("h"):  # held: once it has told the transcript every answer

            async def held() -> Any:
                run = await rt.get_run(wid, run_id)
                assert run.status == "running", f"run {run_id} is {run.status}, not held"
                told = await rt.transcript(wid, run_id=run_id)
                return True if told.total_items == 1 + len(requests) else None

            self.call(self.until, held)
        else:
            assert self.call(rt.wait_for_run, wid, run_id).status == "completed"
            self.ended(wid, "completed")

    # --- rules -----------------------------------------------------------------------------------------------

    @initialize(plans=st.lists(PLANS, max_size=2))
    def first_worker(self, plans: list[str]) -> None:
        """Worker ``a``; often its first input asks, and ``b``'s too (so that answers, two open requests, and
        restarts while runs wait come within the steps)."""
        self.create("a")
        for n, plan in enumerate(plans):
            if n:
                self.create("b")
            self.ask(n, plan, False)

    @rule(wid=WIDS)
    def create(self, wid: str) -> None:
        assert self.rt is not None
        try:
            detail = self.call(self.rt.create_worker, worker_id=wid)
        except WorkerExistsError:
            assert wid in self.status
        else:
            assert wid not in self.status
            assert detail.status == "idle" and detail.transcript_len == 0
            self.status[wid], self.inputs[wid], self.runs[wid], self.queue[wid] = "idle", [], {}, []

    @rule(wid=WIDS, input_id=INPUT_IDS)
    def send(self, wid: str, input_id: str | None) -> None:
        assert self.rt is not None
        status = self.status.get(wid)
        first = self.keys.get((wid, input_id)) if input_id is not None else None
        content = self.content() if input_id is None else f"keyed {input_id}"  # a key's retries repeat its content
        try:
            ack = self.call(self.rt.send_input, wid, content, input_id=input_id)
        except WorkerNotFoundError:
            assert status is None
        except WorkerStoppedError:
            assert status == "stopped" and first is None
        except WorkerBusyError:
            assert status == "busy" and first is None
        else:
            if first is not None:
                assert ack.duplicate and ack.run_id == first
            else:
                assert status == "idle"
                self.accepted(wid, content, input_id, ack)

    @rule(wid=WIDS, input_id=st.sampled_from(["d1", "d2"]))
    def same_input_id_twice_at_once(self, wid: str, input_id: str) -> None:
        """Two inputs with one `input_id` at once: one run, the other answer a duplicate of it."""
        if self.status.get(wid) != "idle" or (wid, input_id) in self.keys:
            return
        rt, content = self.rt, f"keyed {input_id}"
        assert rt is not None
        acks: list[Any] = []

        async def both() -> None:
            async def one() -> None:
                acks.append(await rt.send_input(wid, content, input_id=input_id))

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(one)
                    tg.start_soon(one)

        self.portal.call(both)
        fresh = [a for a in acks if not a.duplicate]
        assert len(fresh) == 1 and [a.run_id for a in acks] == [fresh[0].run_id] * 2
        self.accepted(wid, content, input_id, fresh[0])

    @rule()
    def every_worker_at_once(self) -> None:
        """One command to every Worker at the same time (their writes share group commits): an input to each
        idle one, a cancel to each busy one, an input to each stopped one (refused)."""
        rt = self.rt
        assert rt is not None
        plan = {wid: (status, self.content()) for wid, status in self.status.items()}
        outcomes: dict[str, Any] = {}

        async def one(wid: str, status: str, content: str) -> None:
            try:
                if status == "busy":
                    outcomes[wid] = await rt.cancel_worker(wid)
                else:
                    outcomes[wid] = await rt.send_input(wid, content)
            except WorkerStoppedError as exc:
                outcomes[wid] = exc

        async def all_at_once() -> None:
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for wid, (status, content) in plan.items():
                        tg.start_soon(one, wid, status, content)

        self.portal.call(all_at_once)
        for wid, (status, content) in plan.items():
            out = outcomes[wid]
            if status == "stopped":
                assert isinstance(out, WorkerStoppedError)
            elif status == "busy":
                assert out.cancelled_run_id == self.active[wid]
                assert self.call(rt.wait_for_run, wid, self.active[wid]).status == "cancelled"
                self.ended(wid, "cancelled")
            else:
                self.accepted(wid, content, None, out)
        self.settle()

    @rule(wid=WIDS)
    def finish(self, wid: str) -> None:
        run_id = self.active.get(wid)
        if run_id is None or self.runs[wid][run_id] == "waiting":
            return
        assert self.rt is not None

        async def release() -> None:
            self.release.setdefault(run_id, anyio.Event()).set()

        self.portal.call(release)
        assert self.call(self.rt.wait_for_run, wid, run_id).status == "completed"
        self.ended(wid, "completed")
        self.settle()

    @rule(wid=WIDS)
    def cancel(self, wid: str) -> None:
        assert self.rt is not None
        status, run_id = self.status.get(wid), self.active.get(wid)
        try:
            ack = self.call(self.rt.cancel_worker, wid)
        except WorkerNotFoundError:
            assert status is None
            return
        assert ack.cancelled_run_id == run_id
        if run_id is not None:
            assert self.call(self.rt.wait_for_run, wid, run_id).status == "cancelled"
            self.ended(wid, "cancelled")
            self.settle()

    @rule(wid=WIDS)
    def stop(self, wid: str) -> None:
        assert self.rt is not None
        status, run_id = self.status.get(wid), self.active.get(wid)
        try:
            ack = self.call(self.rt.stop_worker, wid)
        except WorkerNotFoundError:
            assert status is None
            return
        assert ack.status == "stopped" and (ack.event_id is None) == (status == "stopped")
        queued = [q for _, q in self.queue.get(wid, [])]
        expected = [run_id] if run_id is not None else []
        assert ack.cancelled_run_id == ([*expected, *queued] or [None])[0]
        assert ack.cancelled_run_ids == ([*expected, *queued] if status != "stopped" else [])
        self.status[wid] = "stopped"
        if run_id is not None:
            self.ended(wid, "cancelled")
        for q in queued:
            self.runs[wid][q] = "cancelled"
        self.queue[wid] = []

    @rule(wid=WIDS)
    def delete(self, wid: str) -> None:
        assert self.rt is not None
        status = self.status.get(wid)
        try:
            self.call(self.rt.delete_worker, wid)
        except WorkerNotFoundError:
            assert status is None
        except WorkerNotStoppedError:
            assert status in ("idle", "busy")
        else:
            assert status == "stopped"
            del self.status[wid], self.inputs[wid], self.runs[wid], self.queue[wid]
            self.keys = {k: v for k, v in self.keys.items() if k[0] != wid}

    @rule(wid=WIDS, head_start=st.integers(0, 3))
    def long_poll_while_an_input_goes_in(self, wid: str, head_start: int) -> None:
        """A long-poll for what comes after the newest event answers with the input's event (never hangs),
        whether the poll is still reading, already waiting, or not yet started when the input commits."""
        if self.status.get(wid) != "idle":
            return
        rt, content = self.rt, self.content()
        assert rt is not None
        out: dict[str, Any] = {}

        newest = max(self.served, default=0)  # the invariant read the whole log after the last step

        async def scenario() -> None:

            async def poll() -> None:
                # it may wait longer than the bound: it answers when the input's event is committed
                out["page"] = await rt.read_events(after=newest, wait=rt.limits.max_wait_s)

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(poll)
                    for _ in range(head_start):  # let the poll get that far ahead
                        await anyio.lowlevel.checkpoint()
                    out["ack"] = await rt.send_input(wid, content)

        self.portal.call(scenario)
        ack, page = out["ack"], out["page"]
        assert page.events and page.events[0].id == newest + 1
        assert ack.event_id in [e.id for e in page.events]
        self.accepted(wid, content, None, ack)

    @rule(wid=WIDS, input_id=INPUT_IDS)
    def enqueue(self, wid: str, input_id: str | None) -> None:
        """Input with ``on_busy="enqueue"``: queued behind a busy Worker's run (or ``queue_full``), started at once by
        an idle one; a repeated `input_id` answers the first ack, queued or not."""
        assert self.rt is not None
        status = self.status.get(wid)
        first = self.keys.get((wid, input_id)) if input_id is not None else None
        content = self.content() if input_id is None else f"keyed {input_id}"
        try:
            ack = self.call(self.rt.send_input, wid, content, input_id=input_id, on_busy="enqueue")
        except WorkerNotFoundError:
            assert status is None
        except WorkerStoppedError:
            assert status == "stopped" and first is None
        except QueueFullError:
            assert status == "busy" and first is None and len(self.queue[wid]) == MAX_QUEUE
        else:
            if first is not None:
                assert ack.duplicate and ack.run_id == first
            elif status == "idle":
                assert not ack.queued and ack.input_sequence is not None
                self.accepted(wid, content, input_id, ack)
            else:
                assert status == "busy" and len(self.queue[wid]) < MAX_QUEUE
                assert ack.queued and ack.input_sequence is None and not ack.duplicate
                assert ack.event_id not in self.served
                self.queue[wid].append((content, ack.run_id))
                self.runs[wid][ack.run_id] = "queued"
                if input_id is not None:
                    self.keys[(wid, input_id)] = ack.run_id

    @rule(wid=WIDS)
    def interrupt(self, wid: str) -> None:
        """Input with ``on_busy="interrupt"``: the active run ends cancelled and this one takes its place, ahead of
        the queue."""
        assert self.rt is not None
        status, run_id = self.status.get(wid), self.active.get(wid)
        content = self.content()
        try:
            ack = self.call(self.rt.send_input, wid, content, on_busy="interrupt")
        except WorkerNotFoundError:
            assert status is None
        except WorkerStoppedError:
            assert status == "stopped"
        else:
            assert not ack.queued and ack.input_sequence is not None and status in ("idle", "busy")
            if run_id is not None:
                self.ended(wid, "cancelled", hand_over=False)
            self.accepted(wid, content, None, ack)

    @rule(wid=WIDS, last=st.booleans())
    def cancel_queued(self, wid: str, last: bool) -> None:
        """Cancel of a queued run by its id: only it ends, never started."""
        queue = self.queue.get(wid)
        if not queue:
            return
        assert self.rt is not None
        content, run_id = queue[-1] if last else queue[0]
        ack = self.call(self.rt.cancel_worker, wid, run_id=run_id)
        assert (ack.cancelled_run_id, ack.status) == (run_id, "busy")
        queue.remove((content, run_id))
        self.runs[wid][run_id] = "cancelled"

    @precondition(lambda self: self.rt is not None)
    @rule(how=st.sampled_from(["close", "kill", "power_cut"]))
    def restart(self, how: str) -> None:
        """Close and reopen the Runtime on the same directory; after a kill or a power cut nothing closes it
        in order (every write from the cut on fails, as if the process had died there)."""
        if how != "close":
            self.disk.cut()
        self.close()
        if how == "kill":
            self.disk.resume()  # the machine runs on: the page cache keeps every file as it was
        elif how == "power_cut":
            self.disk.power_cut()
            self.disk.__exit__(None, None, None)
            self.disk = PowerLoss(self.root).__enter__()  # what is on disk now is what survived
        waiting = [(wid, run_id) for wid, run_id in self.active.items() if self.runs[wid][run_id] == "waiting"]
        for wid in list(self.active):
            self.ended(wid, "interrupted")
        self.open()
        rt = self.rt
        assert rt is not None
        if waiting:
            event(f"{how} with a run waiting for an answer")
        for wid, run_id in waiting:  # interrupted, its request closed: an answer now is refused
            try:
                self.call(rt.respond, wid, run_id, self.requests[run_id][-1].request_id, approved=True)
            except RequestClosedError as exc:
                assert exc.details["outcome"] == "closed"
            else:
                raise AssertionError(f"an answer reached the request of run {run_id}, waiting at a {how}")
        for wid, run_id, request in self.known():  # an acknowledged answer is still there: its first ack
            if request.outcome == "answered" and request.response_id is not None:
                ack = self.call(
                    rt.respond,
                    wid,
                    run_id,
                    request.request_id,
                    approved=request.approved,
                    response_id=request.response_id,
                )
                assert ack.duplicate and ack.event_id == request.event_id, (run_id, request)
                try:  # and another answer with its response_id is still a conflict
                    self.call(
                        rt.respond,
                        wid,
                        run_id,
                        request.request_id,
                        approved=not request.approved,
                        response_id=request.response_id,
                    )
                except IdempotencyConflictError:
                    pass
                else:
                    raise AssertionError(f"another answer with {request.response_id} was taken after a {how}")
        self.settle()

    @rule(wid=WIDS, ops=st.integers(0, 12), how=st.sampled_from(["kill", "power_cut"]))
    def cut_while_an_input_goes_in(self, wid: str, ops: int, how: str) -> None:
        """The process dies (or the power goes) after `ops` more disk operations (writes, fsyncs, renames) while
        an input is being written; then
        the Runtime restarts. An acknowledged input is there; one that got an error may be there or not (a
        failed fsync leaves the outcome unknown), but if it is, it is there once, last, its run `interrupted`."""
        if self.status.get(wid) != "idle":
            return
        assert self.rt is not None
        content = self.content()
        self.disk.arm_ops(ops)
        try:
            ack = self.call(self.rt.send_input, wid, content)
        except RuntimeUnavailableError:
            ack = None
        else:
            self.accepted(wid, content, None, ack)
        self.restart(how)
        if ack is None:
            page = self.call(self.rt.transcript, wid, limit=1000)
            users = [(e.content, e.run_id) for e in page.items if e.role == "user"]
            kept = users[:-1] == self.inputs[wid] and users[-1:] and users[-1][0] == content
            event(f"{how} during an input: refused, {'kept' if kept else 'not kept'}")
            if kept:
                run_id = users[-1][1]
                assert run_id is not None
                self.inputs[wid].append((content, run_id))
                self.runs[wid][run_id] = "interrupted"
        else:
            event(f"{how} during an input: acknowledged")

    def known(self) -> list[tuple[str, str, Request]]:
        """(worker, run, request) of every request of a run of a current Worker whose id the model knows."""
        return [
            (wid, run_id, request)
            for run_id, (wid, _) in self.asks.items()
            if run_id in self.runs.get(wid, {})
            for request in self.requests[run_id]
            if request.request_id is not None
        ]

    @rule(which=st.integers(0, 2), plan=PLANS, enqueue=st.booleans())
    def ask(self, which: int, plan: str, enqueue: bool) -> None:
        """An input to a Worker whose run asks for approval as its plan says (queued behind a busy Worker's run with
        `enqueue`)."""
        assert self.rt is not None
        if not self.status:
            return
        wid = sorted(self.status)[which % len(self.status)]
        status = self.status[wid]
        content = f"ask{plan} {self.content()}"
        try:
            ack = self.call(self.rt.send_input, wid, content, on_busy="enqueue" if enqueue else "reject")
        except WorkerStoppedError:
            assert status == "stopped"
            return
        except WorkerBusyError:
            assert status == "busy" and not enqueue
            return
        except QueueFullError:
            assert status == "busy" and enqueue and len(self.queue[wid]) == MAX_QUEUE
            return
        self.asks[ack.run_id], self.requests[ack.run_id] = (wid, content), []
        if ack.queued:
            assert status == "busy" and enqueue and ack.event_id not in self.served
            self.queue[wid].append((content, ack.run_id))
            self.runs[wid][ack.run_id] = "queued"
        else:
            assert status == "idle"
            self.accepted(wid, content, None, ack)
            self.starting.append((wid, ack.run_id))
        self.settle()

    @rule(answer=st.tuples(st.integers(0, 2), st.booleans(), RESPONSE_IDS))
    def answer(self, answer: tuple[int, bool, str | None]) -> None:
        """Answer a waiting run (which, approved, response id): it runs on (asks again, is held, or completes)."""
        which, approved, response_id = answer
        rt = self.rt
        waiting = sorted((wid, run_id) for wid, run_id in self.active.items() if self.runs[wid][run_id] == "waiting")
        if not waiting:
            return
        assert rt is not None
        wid, run_id = waiting[which % len(waiting)]
        request = self.requests[run_id][-1]
        ack = self.call(rt.respond, wid, run_id, request.request_id, approved=approved, response_id=response_id)
        assert (ack.run_id, ack.request_id, ack.status, ack.duplicate) == (run_id, request.request_id, "running", False)
        assert ack.event_id not in self.served
        request.outcome, request.approved, request.response_id = "answered", approved, response_id
        request.event_id = ack.event_id
        self.runs[wid][run_id] = "running"
        self.advance(wid, run_id)
        self.settle()

    @rule(again=st.tuples(st.integers(0, 7), st.sampled_from(["same", "other", "fresh", "unknown"])))
    def answer_again(self, again: tuple[int, str]) -> None:
        """Answer a request again (which, how): the same answer with its `response_id` gets the first ack
        (``duplicate``), another answer with it ``idempotency_conflict``, any other answer to a closed request
        ``request_closed``, and a request id the run never issued ``request_not_found``; none changes anything."""
        which, how = again
        rt, known = self.rt, self.known()
        fits = {
            "same": lambda r: r.outcome == "answered" and r.response_id is not None,
            "fresh": lambda r: r.outcome is not None,
            "unknown": lambda r: True,  # open too: an id it never issued is refused, and it stays open
        }
        candidates = [k for k in known if fits.get(how, fits["same"])(k[2])]
        if not candidates:
            return
        assert rt is not None
        wid, run_id, request = candidates[which % len(candidates)]
        event(f"answer again: {how} ({request.outcome or 'open'})")
        respond = rt.respond
        if how == "same":
            ack = self.call(
                respond, wid, run_id, request.request_id, approved=request.approved, response_id=request.response_id
            )
            assert (ack.run_id, ack.request_id, ack.event_id, ack.duplicate) == (
                run_id,
                request.request_id,
                request.event_id,
                True,
            )
            return
        request_id, response_id = request.request_id, "r-fresh"
        if how == "other":
            response_id = request.response_id
        elif how == "unknown":  # another run's request, or none at all
            others = [r.request_id for _, other, r in known if other != run_id]
            request_id = others[which % len(others)] if others else "req-0"
        error = {"other": IdempotencyConflictError, "fresh": RequestClosedError, "unknown": RequestNotFoundError}[how]
        try:
            self.call(respond, wid, run_id, request_id, approved=not request.approved, response_id=response_id)
        except error as exc:
            if how == "fresh":
                assert exc.details["outcome"] == request.outcome, (exc.details, request)
        else:
            raise AssertionError(f"a {how} answer to request {request_id} of run {run_id} was accepted")

    # --- what must hold after every step ---------------------------------------------------------------------

    @invariant()
    def agrees_with_what_was_acknowledged(self) -> None:
        rt = self.rt
        assert rt is not None
        events = self.call(rt.read_events, limit=1000).events
        ids = [e.id for e in events]
        assert ids == list(range(1, len(ids) + 1)), "event ids must be 1..n with no gap or repeat"
        seen = {e.id: (e.kind, e.worker_ref.worker_id if e.worker_ref is not None else None, e.run_id) for e in events}
        for event_id, served in self.served.items():
            assert seen.get(event_id) == served, f"event {event_id} was served as {served}, now {seen.get(event_id)}"
        self.served = seen
        ended: Counter[str] = Counter()
        status_of: dict[str, str] = {}
        for kind, _, run_id in seen.values():
            if kind in TERMINAL and run_id is not None:
                ended[run_id] += 1
                status_of[run_id] = TERMINAL[kind]
        assert all(n == 1 for n in ended.values()), f"a run with two terminal events: {ended}"
        for wid, runs in self.runs.items():
            for run_id, status in runs.items():
                assert (
                    status_of.get(run_id, status if status in ("running", "waiting", "queued") else None) == status
                ), (
                    wid,
                    run_id,
                )
        listed = self.call(rt.list_workers, limit=1000).workers
        assert {s.worker_ref.worker_id: s.status for s in listed} == self.status
        counts = self.call(rt.summary).workers
        by_status = Counter(self.status.values())
        assert (counts.idle, counts.busy, counts.stopped, counts.total) == (
            by_status["idle"],
            by_status["busy"],
            by_status["stopped"],
            len(self.status),
        )
        assert min(counts.idle, counts.busy, counts.stopped) >= 0
        self.requests_agree(events)
        for wid, inputs in self.inputs.items():
            page = self.call(rt.transcript, wid, limit=1000)
            assert page.total_items == len(page.items)
            users = [(e.content, e.run_id) for e in page.items if e.role == "user"]
            assert users == inputs, f"worker {wid}: acknowledged inputs {inputs}, transcript {users}"
            for run_id, status in self.runs[wid].items():
                run = self.call(rt.get_run, wid, run_id)
                assert run.status == status, (wid, run_id)
                pending = run.pending_request.request_id if run.pending_request is not None else None
                assert pending == (self.requests[run_id][-1].request_id if status == "waiting" else None), run_id
                if run_id in self.asks:  # what its engine was told, each answer once, in order
                    told = [
                        f"{r.outcome} {r.approved}"
                        for r in self.requests[run_id]
                        if r.outcome in ("answered", "timed_out")
                    ]
                    content = self.asks[run_id][1]
                    if status == "completed" and content.split(" ")[0].endswith("h"):
                        told.append(f"done {content}")
                    assert [e.content for e in page.items if e.run_id == run_id and e.role != "user"] == told, run_id
            detail = self.call(rt.get_worker, wid)
            assert detail.queued_runs == [run_id for _, run_id in self.queue[wid]], wid
            assert (detail.active_run.run_id if detail.active_run else None) == self.active.get(wid), wid

    def requests_agree(self, events: list[Any]) -> None:
        """Each request the model has is in the log as it says: opened once, closed by exactly one
        ``input_responded`` (as the model says) after it opened and before its run's end, or still open; no other
        run asked; and ``open_requests`` lists the open ones in the order they opened."""
        assert self.rt is not None
        opened: dict[str, list[tuple[str, int]]] = {}  # run -> (prompt, event id) of its requests, in order
        ids: dict[str, list[str]] = {}  # run -> its request ids, in order
        closes: dict[str, list[tuple[int, str, bool | None]]] = {}  # request -> (event id, outcome, approved)
        ends: dict[str, int] = {}  # run -> its terminal event
        for e in events:
            if e.kind == "input_requested":
                request = e.data["request"]
                opened.setdefault(e.run_id, []).append((request["prompt"], e.id))
                ids.setdefault(e.run_id, []).append(request["request_id"])
            elif e.kind == "input_responded":
                closes.setdefault(e.data["request_id"], []).append((e.id, e.data["outcome"], e.data["approved"]))
            elif e.kind in TERMINAL and e.run_id is not None:
                ends[e.run_id] = e.id
        assert set(opened) <= set(self.requests), "a run asked that was not to ask"
        waiting: list[tuple[int, str, str, str | None]] = []
        for run_id, requests in self.requests.items():
            logged = opened.get(run_id, [])
            assert [prompt for prompt, _ in logged] == [r.prompt for r in requests], run_id
            for request, request_id, (_, opened_at) in zip(requests, ids.get(run_id, []), logged, strict=True):
                if request.request_id is None:  # one that timed out at once: its id is learned from the log
                    request.request_id = request_id
                assert request.request_id == request_id, (run_id, request)
                closed = closes.get(request_id, [])
                if request.outcome is None:
                    assert not closed, f"open request {request_id} was closed: {closed}"
                    waiting.append((opened_at, self.asks[run_id][0], run_id, request_id))
                    continue
                assert [(outcome, approved) for _, outcome, approved in closed] == [
                    (request.outcome, request.approved)
                ], (request_id, closed, request)
                assert opened_at < closed[0][0] < ends.get(run_id, closed[0][0] + 1), (request_id, closed, ends)
        page = self.call(self.rt.open_requests)
        listed = [(r.worker_ref.worker_id, r.run_id, r.request.request_id) for r in page.requests]
        assert listed == [(wid, run_id, request_id) for _, wid, run_id, request_id in sorted(waiting)]
        assert page.next_after is None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_runtime_keeps_its_promises_over_the_fs_store_across_restarts_kills_and_power_cuts(backend: str) -> None:
    with start_blocking_portal(backend) as portal:
        FsMachine.portal = portal
        run_state_machine_as_test(
            FsMachine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
