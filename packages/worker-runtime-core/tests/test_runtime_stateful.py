"""A hypothesis state machine drives a Runtime over a store that suspends and fails on command.

It starts with two Workers; rules create, feed (with and without `input_id`), cancel, stop and delete them, one
write failing when the rule says so, and run an input concurrently with a second command while its write is held
(then failed or let through: a second input may queue behind it, ``on_busy="enqueue"``, or interrupt its run). A
third Worker, ``q``, runs an engine that asks for approval: rules make it ask (with a timeout that passes at once, or
none), answer it (a write failing or not), answer it again (the same `response_id`, another answer, another request
id) and cancel or stop it while it waits. After every step the Runtime must agree with its own event log replayed by
a plain model: ids 1..n with no gap and none served twice, exactly one terminal event per accepted run, queued runs
started in acceptance order (or ended without starting), never two active runs, every request closed once and
before its run's end, the listed Workers and their statuses, the counts (never negative), each Worker's transcript
length and last event id. Every call has a bound: a call that does not answer within it is a hang, and fails the
example.

``WORKER_RUNTIME_STATEFUL_EXAMPLES`` and ``WORKER_RUNTIME_STATEFUL_STEPS`` set the examples per backend and the
steps per example (``tools/stateful_long.py`` runs many more).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from store_faults import FaultyStore

from worker_runtime_core import (
    Engine,
    IdempotencyConflictError,
    Limits,
    ProfileConfig,
    RequestClosedError,
    RequestNotFoundError,
    RunContext,
    RunNotFoundError,
    Runtime,
    RuntimeUnavailableError,
    WorkerBusyError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerNotStoppedError,
    WorkerStoppedError,
)

BOUND = 5.0  # seconds; nothing here waits that long unless it hangs
WIDS = st.sampled_from(["a", "b"])
INPUT_IDS = st.sampled_from([None, "i1", "i2"])
SECOND = st.sampled_from(["duplicate", "input", "stop", "cancel", "wait", "enqueue", "interrupt"])
ANSWERS = st.sampled_from(["same", "other", "fresh", "unknown"])


class _Asker(Engine):
    """Asks for approval (with the timeout its input names, if any), then appends what it was told."""

    name = "asker"

    async def run(self, ctx: RunContext) -> None:
        _, _, timeout = ctx.content.partition(":")
        answer = await ctx.request_input("approval", ctx.content, timeout_s=float(timeout) if timeout else None)
        await ctx.emit(f"{answer.outcome} {answer.approved}")


EXAMPLES = int(os.environ.get("WORKER_RUNTIME_STATEFUL_EXAMPLES", "200"))
STEPS = int(os.environ.get("WORKER_RUNTIME_STATEFUL_STEPS", "10"))


class RuntimeMachine(RuleBasedStateMachine):
    portal: ClassVar[BlockingPortal]

    def __init__(self) -> None:
        super().__init__()
        self.store = FaultyStore()
        self.rt = Runtime(
            runtime_id="rt-s",
            store=self.store,
            limits=Limits(operation_timeout_s=BOUND / 2),
            profiles={"asker": ProfileConfig("asker")},
            engines={"asker": _Asker},
        )
        self.context = self.portal.wrap_async_context_manager(self.rt)
        self.context.__enter__()
        self.workers: dict[str, str] = {}  # the replayed log's Workers and statuses, as of the last step
        self.keys: dict[tuple[str, str], str] = {}  # accepted (worker, input_id) -> run id
        self.served: set[int] = set()  # event ids given in acks
        self.pending: tuple[str, str] | None = None  # q's waiting run and its request id
        self.answered: list[tuple[str, str, str, bool]] = []  # (run, request, response id, approved) answered
        self.responses = 0

    def teardown(self) -> None:
        self.store.hold = self.store.failing = False
        self.store.release_all()
        self.context.__exit__(None, None, None)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        async def bounded() -> Any:
            with anyio.fail_after(BOUND):
                return await fn(*args, **kwargs)

        return self.portal.call(bounded)

    def serve(self, event_id: int | None) -> None:
        if event_id is not None:
            assert event_id not in self.served, f"event id {event_id} served twice"
            self.served.add(event_id)

    def accepted(self, wid: str, input_id: str | None, ack: Any) -> None:
        assert not ack.duplicate
        self.serve(ack.event_id)
        if input_id is not None:
            self.keys[(wid, input_id)] = ack.run_id

    # --- rules -----------------------------------------------------------------------------------------------

    @initialize()
    def two_workers(self) -> None:
        for wid in ("a", "b"):
            self.serve(self.call(self.rt.create_worker, worker_id=wid).last_event_id)
        asker = {"kind": "named", "name": "asker"}
        self.serve(self.call(self.rt.create_worker, worker_id="q", profile=asker).last_event_id)

    async def _waiting(self, run_id: str) -> str | None:
        """q's run's request id once it waits, or None once it has ended (timed out)."""
        while True:
            signal = self.rt.event_signal()
            run = await self.rt.get_run("q", run_id)
            if run.pending_request is not None:
                return run.pending_request.request_id
            if run.status not in ("running", "waiting"):
                return None
            await signal.wait()

    @rule(at_once=st.booleans())
    def ask(self, at_once: bool) -> None:
        """q's engine asks; with `at_once` its request times out as soon as it opens."""
        if self.workers.get("q") != "idle":
            return
        ack = self.call(self.rt.send_input, "q", "approve:0.000001" if at_once else "approve")
        self.accepted("q", None, ack)
        request_id = self.call(self._waiting, ack.run_id)
        if request_id is None or at_once:
            run = self.call(self.rt.wait_for_run, "q", ack.run_id)
            assert run.status == "completed"
            entry = self.call(self.rt.transcript, "q", run_id=ack.run_id).items[-1].content
            assert entry == "timed_out False"
        else:
            self.pending = (ack.run_id, request_id)

    @rule(approved=st.booleans(), fail=st.booleans())
    def respond(self, approved: bool, fail: bool) -> None:
        if self.pending is None:
            return
        run_id, request_id = self.pending
        self.responses += 1
        response_id = f"r{self.responses}"
        self.store.failing = fail
        try:
            ack = self.call(self.rt.respond, "q", run_id, request_id, approved=approved, response_id=response_id)
        except RuntimeUnavailableError:
            assert fail
            assert self.call(self.rt.get_run, "q", run_id).status == "waiting"  # nothing changed
            return
        finally:
            self.store.failing = False
        assert not fail and (ack.status, ack.duplicate) == ("running", False)
        self.serve(ack.event_id)
        self.pending = None
        self.answered.append((run_id, request_id, response_id, approved))
        assert self.call(self.rt.wait_for_run, "q", run_id).status == "completed"
        entry = self.call(self.rt.transcript, "q", run_id=run_id).items[-1].content
        assert entry == f"answered {approved}"

    @rule(how=ANSWERS, which=st.integers(min_value=0, max_value=5))
    def respond_again(self, how: str, which: int) -> None:
        """An answer to a request that is closed: the first ack again, a conflict, or closed; or an unknown id."""
        if not self.answered:
            return
        run_id, request_id, response_id, approved = self.answered[which % len(self.answered)]
        respond = self.rt.respond
        if how == "same":
            ack = self.call(respond, "q", run_id, request_id, approved=approved, response_id=response_id)
            assert ack.duplicate and ack.status == "running"
            return
        error: type[Exception] = {
            "other": IdempotencyConflictError,
            "fresh": RequestClosedError,
            "unknown": RequestNotFoundError,
        }[how]
        if how != "other":
            response_id = "r-fresh"  # another answer's own id
        if how == "unknown":
            request_id = "req-0"
        try:
            self.call(respond, "q", run_id, request_id, approved=not approved, response_id=response_id)
        except error:
            pass
        else:
            raise AssertionError(f"a {how} answer to a closed request was accepted")

    @rule(stop=st.booleans())
    def end_waiting(self, stop: bool) -> None:
        """Cancel or stop q while its run waits: the run ends at once and its request closes."""
        if self.pending is None:
            return
        run_id, request_id = self.pending
        if stop:
            ack = self.call(self.rt.stop_worker, "q")
            assert ack.status == "stopped"
        else:
            ack = self.call(self.rt.cancel_worker, "q", run_id=run_id)
            assert ack.status == "idle"
        assert ack.cancelled_run_id == run_id
        self.serve(ack.event_id)
        self.pending = None
        try:
            self.call(self.rt.respond, "q", run_id, request_id, approved=True)
        except RequestClosedError as exc:
            assert exc.details["outcome"] == "closed"
        else:
            raise AssertionError("an answer reached a request closed with its run")

    @rule(wid=WIDS, fail=st.booleans())
    def create(self, wid: str, fail: bool) -> None:
        exists = wid in self.workers
        self.store.failing = fail
        try:
            detail = self.call(self.rt.create_worker, worker_id=wid)
        except WorkerExistsError:
            assert exists
        except RuntimeUnavailableError:
            assert fail and not exists
        else:
            assert not exists and not fail
            self.serve(detail.last_event_id)
        finally:
            self.store.failing = False

    @rule(wid=WIDS, input_id=INPUT_IDS, fail=st.booleans())
    def send(self, wid: str, input_id: str | None, fail: bool) -> None:
        status = self.workers.get(wid)
        first = self.keys.get((wid, input_id)) if input_id is not None else None
        self.store.failing = fail
        try:
            ack = self.call(self.rt.send_input, wid, f"c-{input_id}", input_id=input_id)
        except WorkerNotFoundError:
            assert status is None
            return
        except WorkerStoppedError:
            assert status == "stopped" and first is None
            return
        except RuntimeUnavailableError:
            assert fail and status == "idle" and first is None
            return
        finally:
            self.store.failing = False
        if first is not None:
            assert ack.duplicate and ack.run_id == first
            return
        assert status == "idle" and not fail
        self.accepted(wid, input_id, ack)
        assert self.call(self.rt.wait_for_run, wid, ack.run_id).status == "completed"

    @rule(wid=WIDS)
    def cancel(self, wid: str) -> None:
        status = self.workers.get(wid)
        try:
            ack = self.call(self.rt.cancel_worker, wid)
        except WorkerNotFoundError:
            assert status is None
        else:
            assert (ack.status, ack.cancelled_run_id, ack.event_id) == (status, None, None)

    @rule(wid=WIDS, fail=st.booleans())
    def stop(self, wid: str, fail: bool) -> None:
        status = self.workers.get(wid)
        self.store.failing = fail
        try:
            ack = self.call(self.rt.stop_worker, wid)
        except WorkerNotFoundError:
            assert status is None
        except RuntimeUnavailableError:
            assert fail and status == "idle"
        else:
            assert ack.status == "stopped" and (status == "stopped") == (ack.event_id is None)
            assert status == "stopped" or not fail
            self.serve(ack.event_id)
        finally:
            self.store.failing = False

    @rule(wid=WIDS, fail=st.booleans())
    def delete(self, wid: str, fail: bool) -> None:
        status = self.workers.get(wid)
        self.store.failing = fail
        try:
            ack = self.call(self.rt.delete_worker, wid)
        except WorkerNotFoundError:
            assert status is None
        except WorkerNotStoppedError:
            assert status == "idle"
        except RuntimeUnavailableError:
            assert fail and status == "stopped"
        else:
            assert status == "stopped" and not fail
            self.serve(ack.event_id)
            self.keys = {k: v for k, v in self.keys.items() if k[0] != wid}
        finally:
            self.store.failing = False

    @rule(wid=WIDS, input_id=INPUT_IDS, second=SECOND, fail=st.booleans())
    def input_in_flight(self, wid: str, input_id: str | None, second: str, fail: bool) -> None:
        """An input whose write is held while a second command on the same Worker arrives; then the write fails
        or goes through."""
        if self.workers.get(wid) != "idle" or (input_id is not None and (wid, input_id) in self.keys):
            return
        store, rt = self.store, self.rt
        outcomes: dict[str, Any] = {}

        async def attempt(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            try:
                outcomes[name] = await call()
            except Exception as exc:
                outcomes[name] = exc

        async def scenario() -> None:
            store.hold = True
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(attempt, "first", lambda: rt.send_input(wid, f"c-{input_id}", input_id=input_id))
                    await store.wait_held(1)
                    [held] = store.held
                    run_id = f"run-{held.batch.event.id}"
                    if second == "duplicate":
                        tg.start_soon(attempt, "second", lambda: rt.send_input(wid, f"c-{input_id}", input_id=input_id))
                    elif second == "input":
                        tg.start_soon(attempt, "second", lambda: rt.send_input(wid, "other"))
                    elif second == "stop":
                        tg.start_soon(attempt, "second", lambda: rt.stop_worker(wid))
                    elif second == "cancel":
                        tg.start_soon(attempt, "second", lambda: rt.cancel_worker(wid))
                    elif second in ("enqueue", "interrupt"):
                        tg.start_soon(attempt, "second", lambda: rt.send_input(wid, "other", on_busy=second))
                    else:
                        tg.start_soon(attempt, "second", lambda: rt.wait_for_run(wid, run_id))
                    await anyio.wait_all_tasks_blocked()
                    assert store.held == [held]  # the second command waits for the first change
                    store.hold = False
                    if fail:
                        store.fail_ids.add(held.batch.event.id)
                    store.release_all()
                runs = [a for a in outcomes.values() if hasattr(a, "run_id") and not getattr(a, "duplicate", True)]
                for ack in runs:  # every run ends, whatever the second command did to it
                    await rt.wait_for_run(wid, ack.run_id)

        self.portal.call(scenario)
        first, other = outcomes["first"], outcomes["second"]
        if fail:
            assert isinstance(first, RuntimeUnavailableError)
        else:
            self.accepted(wid, input_id, first)
        if second == "duplicate":
            if input_id is None or fail:  # a fresh input (the first never happened) or busy behind the first
                assert isinstance(other, WorkerBusyError) or not other.duplicate
                if not isinstance(other, WorkerBusyError):
                    self.accepted(wid, input_id, other)
            else:
                assert other.duplicate and other.run_id == first.run_id
        elif second == "input":
            if isinstance(other, Exception):
                assert isinstance(other, WorkerBusyError) and not fail
            else:
                self.accepted(wid, None, other)
        elif second == "stop":
            assert other.status == "stopped"
            assert other.cancelled_run_id in ((None,) if fail else (None, first.run_id))
            self.serve(other.event_id)
        elif second == "cancel":
            assert other.status == "idle" and (not fail or other.cancelled_run_id is None)
        elif second == "enqueue":  # queued behind the first run, or started once it had ended (or never was)
            assert not isinstance(other, Exception) and not other.duplicate
            assert other.queued == (other.input_sequence is None) and not (fail and other.queued)
            self.accepted(wid, None, other)
        elif second == "interrupt":  # it never queues: it starts, the first run cancelled if it was still on
            assert not isinstance(other, Exception) and not other.queued and other.input_sequence is not None
            self.accepted(wid, None, other)
        elif fail:
            assert isinstance(other, RunNotFoundError)
        else:
            assert other.status in ("completed", "cancelled")

    # --- what must hold after every step ---------------------------------------------------------------------

    @invariant()
    def agrees_with_its_event_log(self) -> None:
        events = self.call(self.rt.read_events, limit=1000).events
        ids = [e.id for e in events]
        assert ids == list(range(1, len(ids) + 1)), "event ids must be 1..n with no gap or repeat"
        assert self.served <= set(ids), "an acknowledged event is missing from the log"
        workers: dict[str, str] = {}
        transcript: dict[str, int] = {}
        last: dict[str, int] = {}
        accepted: set[str] = set()
        ended: Counter[str] = Counter()
        active: dict[str, str] = {}  # worker -> its active run, as the log tells
        queued: dict[str, list[str]] = {}  # worker -> its queued runs, in order
        asking: dict[str, str] = {}  # run -> its open request
        closed: Counter[str] = Counter()
        for e in events:
            wid = e.worker_ref.worker_id if e.worker_ref is not None else None
            if wid is None:
                continue
            last[wid] = e.id
            if e.kind == "worker_created":
                workers[wid], transcript[wid] = "idle", 0
            elif e.kind == "input_accepted":
                assert e.run_id is not None
                accepted.add(e.run_id)
                if e.data.get("queued"):
                    assert active.get(wid) is not None and e.data["input_sequence"] is None
                    queued.setdefault(wid, []).append(e.run_id)
                else:
                    assert active.get(wid) is None, "two active runs"
                    workers[wid], active[wid] = "busy", e.run_id
                    transcript[wid] += 1
            elif e.kind == "run_started":
                assert active.get(wid) is None and queued[wid][0] == e.run_id, "queued runs start in order"
                active[wid] = queued[wid].pop(0)
                transcript[wid] += 1
            elif e.kind == "transcript_appended":
                transcript[wid] += 1
            elif e.kind == "input_requested":
                assert e.run_id in accepted and e.run_id not in ended and e.run_id not in asking
                asking[e.run_id] = e.data["request"]["request_id"]
            elif e.kind == "input_responded":
                assert e.run_id is not None and asking.pop(e.run_id) == e.data["request_id"]
                closed[e.data["request_id"]] += 1
            elif e.kind.startswith("run_"):
                assert e.run_id is not None
                assert e.run_id not in asking, "a run ended with its request open"
                ended[e.run_id] += 1
                if active.get(wid) == e.run_id:
                    del active[wid]
                else:  # a queued run that ended without starting
                    queued[wid].remove(e.run_id)
                workers[wid] = "busy" if active.get(wid) or queued.get(wid) else "idle"
            elif e.kind == "worker_stopped":
                workers[wid] = "stopped"
            elif e.kind == "worker_deleted":
                assert workers.pop(wid) == "stopped"
        assert set(ended) | set(asking) == accepted, "a run that did not end waits for an answer"
        assert all(n == 1 for n in ended.values()), "one terminal event per run"
        assert all(n == 1 for n in closed.values()), "a request closes once"
        assert set(asking) == ({self.pending[0]} if self.pending else set())
        listed = self.call(self.rt.list_workers, limit=1000).workers
        assert {s.worker_ref.worker_id: s.status for s in listed} == workers
        assert len(listed) == len(workers)
        counts = self.call(self.rt.summary).workers
        by_status = Counter(workers.values())
        assert (counts.idle, counts.busy, counts.stopped, counts.total) == (
            by_status["idle"],
            by_status["busy"],
            by_status["stopped"],
            len(workers),
        )
        for wid in workers:
            detail = self.call(self.rt.get_worker, wid)
            assert (detail.transcript_len, detail.last_event_id) == (transcript[wid], last[wid])
        self.workers = workers


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_runtime_keeps_its_promises_under_held_and_failed_writes(backend: str) -> None:
    with start_blocking_portal(backend) as portal:
        RuntimeMachine.portal = portal
        run_state_machine_as_test(
            RuntimeMachine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
