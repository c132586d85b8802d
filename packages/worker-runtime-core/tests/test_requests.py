"""Requests for input: a run asks and waits (`waiting`, `pending_request`, `input_requested`), an answer or a timeout
lets it run on (`input_responded`), cancel, stop and shutdown close it; bad answers are refused and change
nothing."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from store_faults import FaultyStore

from worker_runtime_core import (
    BuiltinProfile,
    Engine,
    IdempotencyConflictError,
    InputAnswer,
    InvalidRequestError,
    InvalidWorkerIdError,
    Limits,
    MemoryStore,
    PendingRequest,
    ProfileConfig,
    RequestClosedError,
    RequestNotFoundError,
    RunContext,
    RunNotFoundError,
    Runtime,
    RuntimeUnavailableError,
)

ASK = BuiltinProfile(name="ask")


async def waiting(rt: Runtime, wid: str, run_id: str) -> PendingRequest:
    """The run's pending request, once it is waiting (woken by each durable write)."""
    with anyio.fail_after(10):
        while True:
            signal = rt.event_signal()
            run = await rt.get_run(wid, run_id)
            if run.status == "waiting":
                assert run.pending_request is not None
                return run.pending_request
            assert run.status == "running", run
            await signal.wait()


async def ask_run(rt: Runtime, content: str = "delete /tmp/x", worker_id: str = "w1") -> tuple[str, str, str]:
    """A Worker of the `ask` engine, its run waiting: (worker id, run id, request id)."""
    await rt.create_worker(worker_id=worker_id, profile=ASK)
    ack = await rt.send_input(worker_id, content)
    request = await waiting(rt, worker_id, ack.run_id)
    return worker_id, ack.run_id, request.request_id


async def kinds(rt: Runtime, wid: str) -> list[str]:
    return [e.kind for e in (await rt.read_events(worker_id=wid)).events]


async def last_entry(rt: Runtime, wid: str) -> str:
    return (await rt.transcript(wid)).items[-1].content


@pytest.fixture
async def art() -> Any:
    async with Runtime(runtime_id="rt-ask") as runtime:
        yield runtime


async def test_an_ask_run_waits_with_its_request_then_runs_on_once_approved(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    run = await art.get_run(wid, run_id)
    assert run.pending_request is not None
    assert (run.pending_request.kind, run.pending_request.prompt, run.pending_request.data) == (
        "approval",
        "delete /tmp/x",
        None,
    )
    assert run.pending_request.expires_at is not None
    assert (await art.get_worker(wid)).status == "busy"
    events = (await art.read_events(worker_id=wid)).events
    assert events[-1].kind == "input_requested" and events[-1].run_id == run_id
    assert events[-1].data == {"request": msgspec_builtins(run.pending_request)}
    ack = await art.respond(wid, run_id, request_id, approved=True)
    assert (ack.run_id, ack.request_id, ack.status, ack.duplicate) == (run_id, request_id, "running", False)
    done = await art.wait_for_run(wid, run_id)
    assert (done.status, done.pending_request) == ("completed", None)
    assert await last_entry(art, wid) == "approved"
    responded = [e for e in (await art.read_events(worker_id=wid)).events if e.kind == "input_responded"]
    assert [(e.id, e.data) for e in responded] == [
        (ack.event_id, {"request_id": request_id, "outcome": "answered", "approved": True, "content": None})
    ]


def msgspec_builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


async def test_an_approval_with_a_comment_and_a_refusal_are_the_entries_the_ask_engine_appends(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    await art.respond(wid, run_id, request_id, approved=True, content="go ahead")
    await art.wait_for_run(wid, run_id)
    assert await last_entry(art, wid) == "approved: go ahead"
    ack = await art.send_input(wid, "format the disk")
    request = await waiting(art, wid, ack.run_id)
    await art.respond(wid, ack.run_id, request.request_id, approved=False, content="no way")
    await art.wait_for_run(wid, ack.run_id)
    assert await last_entry(art, wid) == "refused"


async def test_an_input_starting_with_a_question_mark_asks_a_question_and_appends_the_answer(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art, "?  which colour ")
    run = await art.get_run(wid, run_id)
    assert run.pending_request is not None
    assert (run.pending_request.kind, run.pending_request.prompt) == ("question", "which colour")
    await art.respond(wid, run_id, request_id, content="blue")
    assert (await art.wait_for_run(wid, run_id)).status == "completed"
    assert await last_entry(art, wid) == "blue"


async def test_answers_that_do_not_fit_the_request_are_422_and_change_nothing(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    qid, qrun, qreq = await ask_run(art, "?name", worker_id="w2")
    before = (await art.read_events()).next_after
    with pytest.raises(InvalidRequestError) as approval:
        await art.respond(wid, run_id, request_id, content="sure")  # an approval needs `approved`
    assert approval.value.details["field"] == "approved"
    with pytest.raises(InvalidRequestError) as question:
        await art.respond(qid, qrun, qreq, approved=True, content="x")  # a question takes no `approved`
    assert question.value.details["field"] == "approved"
    with pytest.raises(InvalidRequestError) as empty:
        await art.respond(qid, qrun, qreq)
    assert empty.value.details["field"] == "content"
    with pytest.raises(InvalidRequestError) as not_bool:
        await art.respond(wid, run_id, request_id, approved="yes")  # type: ignore[arg-type]
    assert not_bool.value.details["field"] == "approved"
    with pytest.raises(RunNotFoundError):  # a run id that is not an id names no run, as everywhere
        await art.respond(wid, "bad id", request_id, approved=True)
    for field, args in (
        ("request_id", (wid, run_id, "bad\nid")),
        ("request_id", (wid, run_id, 7)),
    ):
        with pytest.raises(InvalidRequestError) as bad:
            await art.respond(*args, approved=True)  # type: ignore[arg-type]
        assert bad.value.details["field"] == field
    with pytest.raises(InvalidRequestError) as bad_key:
        await art.respond(wid, run_id, request_id, approved=True, response_id="")
    assert bad_key.value.details["field"] == "response_id"
    with pytest.raises(InvalidWorkerIdError):
        await art.respond("bad id", "also bad", request_id, approved=True)
    assert (await art.read_events()).next_after == before
    assert (await art.get_run(wid, run_id)).status == "waiting"
    assert (await art.get_run(qid, qrun)).status == "waiting"


async def test_a_request_the_run_never_issued_is_request_not_found(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    await art.create_worker(worker_id="echo")
    echo = await art.send_input("echo", "hi")
    await art.wait_for_run("echo", echo.run_id)
    before = (await art.read_events()).next_after
    with pytest.raises(RequestNotFoundError) as other:
        await art.respond(wid, run_id, "req-999", approved=True)
    assert other.value.details == {"run_id": run_id, "request_id": "req-999"}
    with pytest.raises(RequestNotFoundError):  # a run that never asked
        await art.respond("echo", echo.run_id, request_id, approved=True)
    with pytest.raises(RunNotFoundError):
        await art.respond(wid, "run-999", request_id, approved=True)
    assert (await art.read_events()).next_after == before
    assert (await art.get_run(wid, run_id)).status == "waiting"


async def test_a_closed_request_is_409_except_a_repeat_of_the_answer_that_closed_it(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    first = await art.respond(wid, run_id, request_id, approved=True, content="ok", response_id="resp-1")
    await art.wait_for_run(wid, run_id)
    before = (await art.read_events()).next_after
    again = await art.respond(wid, run_id, request_id, approved=True, content="ok", response_id="resp-1")
    assert again.duplicate and (again.event_id, again.status) == (first.event_id, first.status)
    with pytest.raises(IdempotencyConflictError):
        await art.respond(wid, run_id, request_id, approved=False, content="ok", response_id="resp-1")
    with pytest.raises(RequestClosedError) as closed:
        await art.respond(wid, run_id, request_id, approved=True, content="ok", response_id="resp-2")
    assert closed.value.details == {"request_id": request_id, "outcome": "answered"}
    with pytest.raises(RequestClosedError):
        await art.respond(wid, run_id, request_id, approved=True, content="ok")
    assert (await art.read_events()).next_after == before


async def test_a_request_past_its_timeout_is_answered_timed_out_and_an_approval_counts_as_refused() -> None:
    async with Runtime(limits=Limits(request_timeout_s=0.01)) as rt:
        await rt.create_worker(worker_id="w1", profile=ASK)
        ack = await rt.send_input("w1", "deploy")
        assert (await rt.wait_for_run("w1", ack.run_id, timeout=10)).status == "completed"
        assert await last_entry(rt, "w1") == "refused: timed out"
        events = (await rt.read_events(worker_id="w1")).events
        requested = next(e for e in events if e.kind == "input_requested")
        responded = [e.data for e in events if e.kind == "input_responded"]
        request_id = requested.data["request"]["request_id"]
        assert responded == [{"request_id": request_id, "outcome": "timed_out", "approved": False, "content": None}]
        with pytest.raises(RequestClosedError) as closed:
            await rt.respond("w1", ack.run_id, request_id, approved=True)
        assert closed.value.details["outcome"] == "timed_out"


class _Asker(Engine):
    """Asks with the options of its input (``kind:timeout``), then appends the outcome and the answer."""

    name = "asker"

    async def run(self, ctx: RunContext) -> None:
        kind, _, timeout = ctx.content.partition(":")
        answer = await ctx.request_input(
            kind,  # type: ignore[arg-type]
            "may I?",
            data={"n": 1},
            timeout_s=float(timeout) if timeout else None,
        )
        await ctx.emit(f"{answer.outcome} {answer.approved} {answer.content}")


class _Twice(Engine):
    """Asks twice at once: whichever request comes second, while the other is open, is refused."""

    name = "twice"

    async def run(self, ctx: RunContext) -> None:
        refused: list[str] = []
        one_refused = anyio.Event()

        async def ask(prompt: str) -> None:
            try:
                await ctx.request_input("question", prompt)
            except InvalidRequestError as exc:
                refused.append(exc.message)
                one_refused.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "first")
            tg.start_soon(ask, "second")
            await one_refused.wait()
            tg.cancel_scope.cancel()
        await ctx.emit("refused: " + " | ".join(refused))


async def test_an_engine_gets_the_typed_answer_and_its_data_reaches_the_request() -> None:
    async with Runtime(engines={"asker": _Asker}, profiles={"asker": ProfileConfig("asker")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "asker"})
        ack = await rt.send_input("w1", "question")
        request = await waiting(rt, "w1", ack.run_id)
        assert request.data == {"n": 1}
        await rt.respond("w1", ack.run_id, request.request_id, content="yes")
        await rt.wait_for_run("w1", ack.run_id)
        assert await last_entry(rt, "w1") == "answered None yes"
        timed = await rt.send_input("w1", "question:0.01")  # the engine's own timeout
        await rt.wait_for_run("w1", timed.run_id, timeout=10)
        assert await last_entry(rt, "w1") == "timed_out None None"
        assert InputAnswer(outcome="answered").approved is None


async def test_a_run_opens_one_request_at_a_time() -> None:
    async with Runtime(engines={"twice": _Twice}, profiles={"twice": ProfileConfig("twice")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "twice"})
        ack = await rt.send_input("w1", "go")
        run = await rt.wait_for_run("w1", ack.run_id, timeout=10)
        assert run.status == "completed"
        entry = await last_entry(rt, "w1")
        assert entry.startswith("refused: run ") and "open; await its answer first" in entry
        events = (await rt.read_events(worker_id="w1")).events
        assert [e.kind for e in events].count("input_requested") == 1
        closed = [e.data for e in events if e.kind == "input_responded"]  # the wait the engine gave up closed it
        assert [c["outcome"] for c in closed] == ["closed"]


class _InTurn(Engine):
    """Asks one question after another (the first with the timeout its input names, unless it is ``wait``), then
    appends each outcome and answer."""

    name = "in-turn"

    async def run(self, ctx: RunContext) -> None:
        first = None if ctx.content == "wait" else float(ctx.content)
        told = []
        for n, timeout in enumerate((first, None)):
            answer = await ctx.request_input("question", f"q{n}", timeout_s=timeout)
            told.append(f"{answer.outcome} {answer.content}")
        await ctx.emit(" | ".join(told))


@pytest.mark.parametrize("first", ["answered", "timed_out"])
async def test_a_run_asks_again_once_its_first_request_is_answered_or_timed_out(first: str) -> None:
    async with Runtime(engines={"in-turn": _InTurn}, profiles={"in-turn": ProfileConfig("in-turn")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "in-turn"})
        ack = await rt.send_input("w1", "0.000001" if first == "timed_out" else "wait")
        if first == "answered":
            request = await waiting(rt, "w1", ack.run_id)
            assert request.prompt == "q0"
            await rt.respond("w1", ack.run_id, request.request_id, content="one")
        with anyio.fail_after(10):  # the second request opens (q0 may still be timing out)
            while True:
                signal = rt.event_signal()
                run = await rt.get_run("w1", ack.run_id)
                assert run.status in ("running", "waiting"), run
                pending = run.pending_request
                if pending is not None and pending.prompt == "q1":
                    break
                await signal.wait()
        assert [r.request.prompt for r in (await rt.open_requests()).requests] == ["q1"]
        await rt.respond("w1", ack.run_id, pending.request_id, content="two")
        assert (await rt.wait_for_run("w1", ack.run_id, timeout=10)).status == "completed"
        told = "answered one" if first == "answered" else "timed_out None"
        assert await last_entry(rt, "w1") == f"{told} | answered two"
        assert (await kinds(rt, "w1")).count("input_responded") == 2


class _BadData(Engine):
    """Asks with data that is not JSON, or too large."""

    name = "bad-data"

    async def run(self, ctx: RunContext) -> None:
        data = object() if ctx.content == "object" else {"blob": "x" * 300}
        await ctx.request_input("question", "what?", data=data)


async def test_request_data_that_is_not_json_or_too_large_is_refused() -> None:
    limits = Limits(max_input_bytes=256)
    async with Runtime(limits=limits, engines={"bad": _BadData}, profiles={"bad": ProfileConfig("bad")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "bad"})
        for content in ("object", "large"):
            ack = await rt.send_input("w1", content)
            run = await rt.wait_for_run("w1", ack.run_id, timeout=10)
            assert run.status == "failed" and run.error is not None and run.error.code == "invalid_request"
        assert "input_requested" not in await kinds(rt, "w1")


async def test_bad_requests_from_an_engine_are_refused_and_fail_its_run() -> None:
    async with Runtime(engines={"asker": _Asker}, profiles={"asker": ProfileConfig("asker")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "asker"})
        for content in ("maybe", "approval:-1", "approval:0"):
            ack = await rt.send_input("w1", content)
            run = await rt.wait_for_run("w1", ack.run_id, timeout=10)
            assert run.status == "failed" and run.error is not None and run.error.code == "invalid_request"
        assert "input_requested" not in await kinds(rt, "w1")


async def test_cancel_ends_a_waiting_run_at_once_and_closes_its_request_visibly(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    cancel = await art.cancel_worker(wid, reason="never mind")
    assert (cancel.status, cancel.cancelled_run_id) == ("idle", run_id)
    run = await art.get_run(wid, run_id)
    assert (run.status, run.pending_request) == ("cancelled", None)
    events = (await art.read_events(worker_id=wid)).events
    assert [e.kind for e in events[-3:]] == ["input_requested", "input_responded", "run_cancelled"]
    assert events[-2].data == {"request_id": request_id, "outcome": "closed", "approved": None, "content": None}
    assert (await art.open_requests()).requests == []
    with pytest.raises(RequestClosedError) as closed:
        await art.respond(wid, run_id, request_id, approved=True)
    assert closed.value.details["outcome"] == "closed"


async def test_stop_ends_a_waiting_run_and_closes_its_request(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art)
    stop = await art.stop_worker(wid)
    assert (stop.status, stop.cancelled_run_id) == ("stopped", run_id)
    assert (await kinds(art, wid))[-3:] == ["input_responded", "run_cancelled", "worker_stopped"]
    with pytest.raises(RequestClosedError):
        await art.respond(wid, run_id, request_id, approved=True)


async def test_the_runs_own_timeout_pauses_while_it_waits() -> None:
    profiles = {"ask": ProfileConfig("ask", timeout_s=0.05)}
    async with Runtime(profiles=profiles) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "ask"})
        ack = await rt.send_input("w1", "go")
        request = await waiting(rt, "w1", ack.run_id)
        await anyio.sleep(0.2)  # time passing while it waits is the point: its 0.05 s run timeout must not fire
        assert (await rt.get_run("w1", ack.run_id)).status == "waiting"
        await rt.respond("w1", ack.run_id, request.request_id, approved=True)
        assert (await rt.wait_for_run("w1", ack.run_id, timeout=10)).status == "completed"


async def test_open_requests_are_listed_in_the_order_they_opened_and_paged(art: Runtime) -> None:
    opened = [await ask_run(art, f"job {i}", worker_id=f"w{i}") for i in range(3)]
    page = await art.open_requests(limit=2)
    assert [(r.worker_ref.worker_id, r.run_id, r.request.request_id) for r in page.requests] == opened[:2]
    assert page.next_after is not None
    rest = await art.open_requests(after=page.next_after, limit=2)
    assert [(r.worker_ref.worker_id, r.run_id, r.request.request_id) for r in rest.requests] == opened[2:]
    assert rest.next_after is None
    wid, run_id, request_id = opened[0]
    await art.respond(wid, run_id, request_id, approved=True)
    assert [r.run_id for r in (await art.open_requests()).requests] == [o[1] for o in opened[1:]]
    for after, limit in ((-1, None), ("x", None), (0, 0)):
        with pytest.raises(InvalidRequestError):
            await art.open_requests(after=after, limit=limit)  # type: ignore[arg-type]


async def test_concurrent_answers_get_one_answer_and_one_request_closed() -> None:
    store = FaultyStore()
    async with Runtime(store=store) as rt:
        wid, run_id, request_id = await ask_run(rt)
        store.hold = True
        results: list[object] = []

        async def answer(approved: bool, response_id: str) -> None:
            try:
                results.append(await rt.respond(wid, run_id, request_id, approved=approved, response_id=response_id))
            except RequestClosedError as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer, True, "a")
            await store.wait_held(1)  # the first answer's write is in flight
            tg.start_soon(answer, False, "b")
            tg.start_soon(answer, True, "a")  # the same answer again: its first ack
            await anyio.lowlevel.checkpoint()
            store.hold = False
            store.release_all()
        acks = [r for r in results if not isinstance(r, Exception)]
        assert len(acks) == 2 and {a.duplicate for a in acks} == {False, True}  # type: ignore[attr-defined]
        assert len({a.event_id for a in acks}) == 1  # type: ignore[attr-defined]
        assert sum(isinstance(r, RequestClosedError) for r in results) == 1
        await rt.wait_for_run(wid, run_id)
        assert await last_entry(rt, wid) == "approved"


async def test_a_refused_answer_changes_nothing_and_can_be_sent_again() -> None:
    store = FaultyStore()
    async with Runtime(store=store) as rt:
        wid, run_id, request_id = await ask_run(rt)
        store.failing = True
        with pytest.raises(RuntimeUnavailableError):
            await rt.respond(wid, run_id, request_id, approved=True, response_id="r1")
        store.failing = False
        run = await rt.get_run(wid, run_id)
        assert run.status == "waiting" and run.pending_request is not None
        assert [r.run_id for r in (await rt.open_requests()).requests] == [run_id]
        with anyio.fail_after(10):
            while True:
                try:
                    ack = await rt.respond(wid, run_id, request_id, approved=True, response_id="r1")
                    break
                except RuntimeUnavailableError:  # the failed write is still settling
                    await anyio.sleep(0.01)
        assert not ack.duplicate
        assert (await rt.wait_for_run(wid, run_id)).status == "completed"


async def test_shutdown_interrupts_a_waiting_run_at_once_and_closes_its_request() -> None:
    store = MemoryStore()
    rt = Runtime(store=store)
    await rt.start()
    wid, run_id, request_id = await ask_run(rt)

    async def interrupted() -> list[Any]:
        with anyio.fail_after(10):  # well inside the grace period: a waiting run does not hold the shutdown
            while True:
                signal = rt.event_signal()
                events = [e for e in await store.read_events(0, 100) if e.worker_id == wid]
                if events[-1].kind == "run_interrupted":
                    return events
                await signal.wait()

    found: list[Any] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.close, 20)
        found = await interrupted()
    assert [e.kind for e in found[-2:]] == ["input_responded", "run_interrupted"]
    assert found[-2].data.outcome == "closed"


async def test_an_infinite_timeout_never_expires_and_shows_no_expiry() -> None:
    async with Runtime(engines={"asker": _Asker}, profiles={"asker": ProfileConfig("asker")}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "asker"})
        ack = await rt.send_input("w1", "approval:inf")
        request = await waiting(rt, "w1", ack.run_id)
        assert request.expires_at is None
        await rt.respond("w1", ack.run_id, request.request_id, approved=False)
        await rt.wait_for_run("w1", ack.run_id, timeout=10)
        assert await last_entry(rt, "w1") == "answered False None"
        nan = await rt.send_input("w1", "approval:nan")
        run = await rt.wait_for_run("w1", nan.run_id, timeout=10)
        assert run.status == "failed" and run.error is not None and run.error.code == "invalid_request"


async def test_a_sooner_timeout_fires_while_a_later_one_still_waits() -> None:
    async with Runtime(engines={"asker": _Asker}, profiles={"asker": ProfileConfig("asker")}) as rt:
        for wid in ("late", "soon"):
            await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": "asker"})
        late = await rt.send_input("late", "approval:3600")
        late_request = await waiting(rt, "late", late.run_id)
        soon = await rt.send_input("soon", "approval:0.01")  # opens after, expires first
        assert (await rt.wait_for_run("soon", soon.run_id, timeout=10)).status == "completed"
        assert await last_entry(rt, "soon") == "timed_out False None"
        assert (await rt.get_run("late", late.run_id)).status == "waiting"
        await rt.respond("late", late.run_id, late_request.request_id, approved=True)
        await rt.wait_for_run("late", late.run_id, timeout=10)
        assert await last_entry(rt, "late") == "answered True None"


# --- with queued runs (on_busy="enqueue" / "interrupt") ------------------------------------------------------------


class _AskWhenTold(Engine):
    """Asks for approval once `go` is set (`asking` is set just before it asks), then appends what it was told."""

    name = "ask_when_told"
    go: anyio.Event
    asking: anyio.Event

    async def run(self, ctx: RunContext) -> None:
        await _AskWhenTold.go.wait()
        _AskWhenTold.asking.set()
        answer = await ctx.request_input("approval", f"go on with {ctx.content}?")
        await ctx.emit(f"{answer.outcome} {answer.approved}")


def _told_runtime(store: FaultyStore) -> Runtime:
    _AskWhenTold.go = anyio.Event()
    _AskWhenTold.asking = anyio.Event()
    return Runtime(store=store, profiles={"p": ProfileConfig("ask_when_told")}, engines={"ask_when_told": _AskWhenTold})


async def test_a_request_opened_while_an_input_is_being_queued_is_written_with_that_input() -> None:
    store = FaultyStore()
    async with _told_runtime(store) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        first = await rt.send_input("w1", "first")
        store.hold = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: rt.send_input("w1", "second", on_busy="enqueue"))
            await store.wait_held(1)  # the enqueue's write is in flight
            _AskWhenTold.go.set()
            await _AskWhenTold.asking.wait()  # the run has asked: its write waits for the enqueue's
            queued = store.release_all()
            await store.wait_held(1)
            asked = store.release_all()
            store.hold = False
        assert [w.batch.event.kind for w in queued + asked] == ["input_accepted", "input_requested"]
        staged = asked[0].batch.worker
        assert staged is not None and [q.run_id for q in staged.queued] == [queued[0].batch.event.run_id]
        assert staged.active_run is not None and staged.active_run.run_id == first.run_id
        assert (await rt.get_worker("w1")).queued_runs == [queued[0].batch.event.run_id]


async def test_a_request_timing_out_while_an_input_is_being_queued_is_written_with_that_input() -> None:
    store = FaultyStore()
    async with _told_runtime(store) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        first = await rt.send_input("w1", "first")
        _AskWhenTold.go.set()
        await waiting(rt, "w1", first.run_id)
        store.hold = True
        closing = anyio.Event()
        active = rt._supervisor.active["w1"]  # the timer's own call, made at a chosen moment

        async def time_out() -> None:
            closing.set()
            await rt._supervisor.requests.close(active, "timed_out")

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: rt.send_input("w1", "second", on_busy="enqueue"))
            await store.wait_held(1)  # the enqueue's write is in flight
            tg.start_soon(time_out)
            await closing.wait()  # the timeout's write waits for the enqueue's
            queued = store.release_all()
            await store.wait_held(1)
            closed = store.release_all()
            store.hold = False
        assert [w.batch.event.kind for w in queued + closed] == ["input_accepted", "input_responded"]
        staged = closed[0].batch.worker
        assert staged is not None and [q.run_id for q in staged.queued] == [queued[0].batch.event.run_id]
        second = queued[0].batch.event.run_id
        assert second is not None
        assert (await rt.wait_for_run("w1", first.run_id)).status == "completed"
        assert (await waiting(rt, "w1", second)).prompt == "go on with second?"  # the queued run started after it


async def test_a_queued_run_waits_behind_a_waiting_run_and_starts_once_it_is_answered(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art, "first")
    queued = await art.send_input(wid, "second", on_busy="enqueue")
    assert queued.queued and (await art.get_run(wid, queued.run_id)).status == "queued"
    assert (await art.get_worker(wid)).queued_runs == [queued.run_id]
    await art.respond(wid, run_id, request_id, approved=True)
    assert (await art.wait_for_run(wid, run_id)).status == "completed"
    request = await waiting(art, wid, queued.run_id)
    assert request.prompt == "second" and (await art.get_worker(wid)).queued_runs == []


async def test_interrupting_a_waiting_run_closes_its_request_and_stop_ends_the_rest(art: Runtime) -> None:
    wid, run_id, request_id = await ask_run(art, "first")
    queued = await art.send_input(wid, "later", on_busy="enqueue")
    now = await art.send_input(wid, "now", on_busy="interrupt")
    assert not now.queued and now.input_sequence is not None
    ended = await art.get_run(wid, run_id)
    assert ended.status == "cancelled" and ended.pending_request is None
    with pytest.raises(RequestClosedError):
        await art.respond(wid, run_id, request_id, approved=True)
    events = (await art.read_events(worker_id=wid)).events
    responded = [e for e in events if e.kind == "input_responded"]
    assert [e.data["outcome"] for e in responded] == ["closed"]  # type: ignore[index]
    cancelled = next(e for e in events if e.kind == "run_cancelled")
    assert cancelled.data["reason"] == "interrupted_by_input"  # type: ignore[index]
    assert (await waiting(art, wid, now.run_id)).prompt == "now"  # the interrupting run asks in its turn
    assert (await art.get_run(wid, queued.run_id)).status == "queued"
    ack = await art.stop_worker(wid)
    assert ack.status == "stopped" and ack.cancelled_run_id == now.run_id
    assert ack.cancelled_run_ids == [now.run_id, queued.run_id]
    assert [(await art.get_run(wid, r)).status for r in (now.run_id, queued.run_id)] == ["cancelled", "cancelled"]
    assert (await art.open_requests()).requests == []


# --- parked runs (park_for_input / resume) ---------------------------------------------------------------------------


class _Parker(Engine):
    """Parks on every input; `after_park` (if set) is awaited after parking, `fail` makes it raise after parking,
    `resume_forever` makes its resume hang (for the run's own timeout); records every call."""

    name = "parker"
    calls: list[str]
    after_park: anyio.Event | None = None
    fail = False
    resume_forever = False
    timeout: float | None = None

    async def run(self, ctx: RunContext) -> None:
        await ctx.park_for_input("approval", ctx.content, timeout_s=_Parker.timeout)
        _Parker.calls.append("parked")
        if _Parker.after_park is not None:
            await _Parker.after_park.wait()
        if _Parker.fail:
            raise RuntimeError("after parking")

    async def resume(self, ctx: RunContext, answer: InputAnswer) -> None:
        _Parker.calls.append(f"resume {answer.outcome} {answer.approved}")
        if _Parker.resume_forever:
            await anyio.sleep_forever()
        await ctx.emit(f"{answer.outcome} {answer.approved}")


def _parker_runtime(**profile: Any) -> Runtime:
    _Parker.calls = []
    _Parker.after_park = None
    _Parker.fail = False
    _Parker.resume_forever = False
    _Parker.timeout = None
    return Runtime(profiles={"p": ProfileConfig("parker", **profile)}, engines={"parker": _Parker})


async def _parked(rt: Runtime, content: str = "go") -> tuple[str, str]:
    await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
    ack = await rt.send_input("w1", content)
    return ack.run_id, (await waiting(rt, "w1", ack.run_id)).request_id


async def test_a_parked_run_waits_with_its_engine_call_returned_and_resumes_once_with_its_answer() -> None:
    async with _parker_runtime() as rt:
        run_id, request_id = await _parked(rt)
        assert _Parker.calls == ["parked"]  # the engine's call returned while the run waits, with no task
        assert rt._supervisor.active["w1"].scope is None
        await rt.respond("w1", run_id, request_id, approved=True)
        assert (await rt.wait_for_run("w1", run_id)).status == "completed"
        assert _Parker.calls == ["parked", "resume answered True"]
        assert await last_entry(rt, "w1") == "answered True"


async def test_an_answer_before_the_parked_engine_s_call_returns_resumes_it_once_after_it_has() -> None:
    async with _parker_runtime() as rt:
        _Parker.after_park = gate = anyio.Event()
        run_id, request_id = await _parked(rt)
        await rt.respond("w1", run_id, request_id, approved=False)
        assert _Parker.calls == ["parked"]  # still in its call: not resumed beside it
        gate.set()
        assert (await rt.wait_for_run("w1", run_id)).status == "completed"
        assert _Parker.calls == ["parked", "resume answered False"]


async def test_a_parked_run_that_times_out_resumes_with_timed_out_and_a_refusal() -> None:
    async with _parker_runtime() as rt:
        _Parker.timeout = 0.001
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        ack = await rt.send_input("w1", "soon")
        assert (await rt.wait_for_run("w1", ack.run_id)).status == "completed"
        assert _Parker.calls == ["parked", "resume timed_out False"]


async def test_a_parked_run_s_own_timeout_still_ends_it_once_it_resumes() -> None:
    async with _parker_runtime(timeout_s=0.05) as rt:
        _Parker.resume_forever = True
        run_id, request_id = await _parked(rt)
        await rt.respond("w1", run_id, request_id, approved=True)
        with anyio.fail_after(10):
            run = await rt.wait_for_run("w1", run_id)
        assert run.status == "timed_out" and _Parker.calls == ["parked", "resume answered True"]


async def test_a_parked_engine_that_fails_after_parking_fails_its_run_and_closes_the_request() -> None:
    async with _parker_runtime() as rt:
        _Parker.fail = True
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        ack = await rt.send_input("w1", "go")
        run = await rt.wait_for_run("w1", ack.run_id)
        assert run.status == "failed" and run.error is not None and run.error.code == "engine_error"
        responded = [e.data for e in (await rt.read_events(worker_id="w1")).events if e.kind == "input_responded"]
        assert [d["outcome"] for d in responded] == ["closed"]  # type: ignore[index]
        assert (await rt.open_requests()).requests == []


async def test_cancel_and_stop_end_a_parked_run_at_once() -> None:
    async with _parker_runtime() as rt:
        run_id, _ = await _parked(rt)
        ack = await rt.cancel_worker("w1")
        assert ack.cancelled_run_id == run_id and ack.status == "idle"
        assert (await rt.get_run("w1", run_id)).status == "cancelled"
        second = await rt.send_input("w1", "again")
        await waiting(rt, "w1", second.run_id)
        stop = await rt.stop_worker("w1")
        assert stop.cancelled_run_id == second.run_id and stop.status == "stopped"
        assert _Parker.calls == ["parked", "parked"]  # never resumed


def test_a_waiting_ask_run_holds_less_than_3_kib_over_its_idle_worker() -> None:
    import gc
    import tracemalloc

    async def measure() -> float:
        async with Runtime(limits=Limits(max_workers=300)) as rt:
            ids = [f"w{n}" for n in range(200)]
            for wid in ids:
                await rt.create_worker(worker_id=wid, profile=ASK)
            await rt.create_worker(worker_id="warm", profile=ASK)
            warm = await rt.send_input("warm", "approve warm-up!")
            await waiting(rt, "warm", warm.run_id)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            runs = [(await rt.send_input(wid, f"approve {n:08d}")).run_id for n, wid in enumerate(ids)]
            for wid, run_id in zip(ids, runs, strict=True):
                await waiting(rt, wid, run_id)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / len(ids)

    tracemalloc.start()
    try:
        per_run = anyio.run(measure)
    finally:
        tracemalloc.stop()
    assert per_run < 3 * 1024, per_run  # a run waiting in a task of its own held about 4.5 KiB


async def test_an_answer_then_a_cancel_before_the_parked_engine_s_call_returns_cancels_it_never_resumed() -> None:
    async with _parker_runtime() as rt:
        _Parker.after_park = anyio.Event()  # never set: the engine's call stays in flight after parking
        run_id, request_id = await _parked(rt)
        await rt.respond("w1", run_id, request_id, approved=True)
        ack = await rt.cancel_worker("w1")
        assert ack.cancelled_run_id == run_id
        assert (await rt.wait_for_run("w1", run_id)).status == "cancelled"
        assert _Parker.calls == ["parked"]


async def test_an_answer_whose_write_is_in_flight_when_a_cancel_comes_ends_the_run_cancelled_once() -> None:
    store = FaultyStore()
    async with Runtime(store=store, profiles={"p": ProfileConfig("parker")}, engines={"parker": _Parker}) as rt:
        _Parker.calls, _Parker.after_park, _Parker.fail, _Parker.timeout = [], None, False, None
        _Parker.resume_forever = True
        run_id, request_id = await _parked(rt)
        store.hold = True
        results: list[Any] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def answer() -> None:
                    results.append(await rt.respond("w1", run_id, request_id, approved=True))

                tg.start_soon(answer)
                await store.wait_held(1)  # the answer's write is in flight
                cancel_started = anyio.Event()

                async def cancel() -> None:
                    cancel_started.set()
                    results.append(await rt.cancel_worker("w1"))

                tg.start_soon(cancel)
                await cancel_started.wait()
                store.hold = False
                store.release_all()
        with anyio.fail_after(10):
            run = await rt.wait_for_run("w1", run_id)
        assert run.status == "cancelled"
        assert _Parker.calls.count("parked") == 1 and len(_Parker.calls) <= 2
        assert (await rt.open_requests()).requests == []


async def test_cancelling_a_parked_run_starts_the_run_queued_behind_it() -> None:
    async with _parker_runtime() as rt:
        run_id, _ = await _parked(rt)
        queued = await rt.send_input("w1", "next", on_busy="enqueue")
        ack = await rt.cancel_worker("w1")
        assert ack.cancelled_run_id == run_id and ack.status == "busy"
        await waiting(rt, "w1", queued.run_id)
        assert _Parker.calls == ["parked", "parked"]


async def test_shutdown_interrupts_a_parked_run_and_keeps_the_run_queued_behind_it_queued() -> None:
    store = MemoryStore()
    _parker_runtime()
    rt = Runtime(store=store, profiles={"p": ProfileConfig("parker")}, engines={"parker": _Parker})
    await rt.start()
    run_id, _ = await _parked(rt)
    queued = await rt.send_input("w1", "next", on_busy="enqueue")
    with anyio.fail_after(10):  # a parked run does not hold the shutdown for its grace period
        await rt.close(20)
    ended = [(e.kind, e.run_id) for e in await store.read_events(0, 100) if e.kind.startswith("run_")]
    assert ended == [("run_interrupted", run_id)]  # the queued run never started: it starts after the restart
    assert queued.run_id not in {r for _, r in ended} and _Parker.calls == ["parked"]


async def test_shutdown_right_after_an_answer_ends_the_resumed_run_once() -> None:
    store = MemoryStore()
    _parker_runtime()
    _Parker.resume_forever = True
    rt = Runtime(store=store, profiles={"p": ProfileConfig("parker")}, engines={"parker": _Parker})
    await rt.start()
    run_id, request_id = await _parked(rt)
    await rt.respond("w1", run_id, request_id, approved=True)
    with anyio.fail_after(10):
        await rt.close(0)
    runs = [r for r in await store.read_events(0, 100) if r.kind.startswith("run_") and r.run_id == run_id]
    assert [e.kind for e in runs] == ["run_interrupted"]


class _ParkTwice(Engine):
    name = "park_twice"
    outcome: list[str]

    async def run(self, ctx: RunContext) -> None:
        await ctx.park_for_input("approval", "one")
        try:
            await ctx.park_for_input("approval", "two")
        except Exception as exc:
            _ParkTwice.outcome.append(type(exc).__name__)
        try:
            await ctx.emit("after parking")
        except Exception as exc:
            _ParkTwice.outcome.append(type(exc).__name__)

    async def resume(self, ctx: RunContext, answer: InputAnswer) -> None:
        await ctx.emit(f"resumed {answer.approved}")


async def test_writing_after_parking_in_the_same_call_is_refused_and_changes_nothing() -> None:
    _ParkTwice.outcome = []
    async with Runtime(profiles={"p": ProfileConfig("park_twice")}, engines={"park_twice": _ParkTwice}) as rt:
        run_id, request_id = await _parked(rt)
        assert _ParkTwice.outcome == ["InvalidRequestError", "InvalidRequestError"]
        run = await rt.get_run("w1", run_id)
        assert run.pending_request is not None and run.pending_request.request_id == request_id
        await rt.respond("w1", run_id, request_id, approved=True)
        assert (await rt.wait_for_run("w1", run_id)).status == "completed"
        entries = (await rt.transcript("w1")).items
        assert [e.content for e in entries][1:] == ["resumed True"]  # nothing was written while it was parked


async def test_a_parked_run_s_own_timeout_is_paused_while_it_waits_for_its_answer() -> None:
    async with _parker_runtime(timeout_s=0.1) as rt:
        _Parker.timeout = 0.3  # the request times out well after the run's own timeout would have
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        ack = await rt.send_input("w1", "slow answer")
        with anyio.fail_after(10):
            run = await rt.wait_for_run("w1", ack.run_id)
        assert run.status == "completed" and _Parker.calls == ["parked", "resume timed_out False"]


async def test_a_run_timing_out_after_parking_but_before_its_call_returns_ends_timed_out_and_closes_its_request() -> (
    None
):
    async with _parker_runtime(timeout_s=0.05) as rt:
        _Parker.after_park = anyio.Event()  # never set: the engine's call outlives the run's own timeout
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "p"})
        ack = await rt.send_input("w1", "go")
        with anyio.fail_after(10):
            run = await rt.wait_for_run("w1", ack.run_id)
        assert run.status == "timed_out" and _Parker.calls == ["parked"]
        responded = [e.data for e in (await rt.read_events(worker_id="w1")).events if e.kind == "input_responded"]
        assert [d["outcome"] for d in responded] == ["closed"]  # type: ignore[index]
        assert (await rt.open_requests()).requests == []


async def test_a_parked_run_ended_while_its_timeout_s_write_is_in_flight_ends_so_and_is_never_resumed() -> None:
    store = FaultyStore()
    async with Runtime(store=store, profiles={"p": ProfileConfig("parker")}, engines={"parker": _Parker}) as rt:
        _Parker.calls, _Parker.after_park, _Parker.fail, _Parker.timeout = [], None, False, None
        _Parker.resume_forever = False
        run_id, _ = await _parked(rt)
        sup = rt._supervisor
        active = sup.active["w1"]  # the timer's own call, made at a chosen moment
        store.hold = True
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.requests.close, active, "timed_out")
                await store.wait_held(1)  # the timeout's write is in flight
                sup.request_end(active, "cancelled", "test")  # as a stop or a shutdown does, at this moment
                store.hold = False
                store.release_all()
            run = await rt.wait_for_run("w1", run_id)
        assert run.status == "cancelled"
        assert _Parker.calls == ["parked"]  # its answer came with its end under way: never resumed
        responded = [e.data for e in (await rt.read_events(worker_id="w1")).events if e.kind == "input_responded"]
        assert [d["outcome"] for d in responded] == ["timed_out"]  # type: ignore[index]
