"""Input and runs: single flight, idempotency, validation, run outcomes."""

from __future__ import annotations

import anyio
import pytest
from core_helpers import Gate, gated_worker

from worker_runtime_core import (
    EngineError,
    IdempotencyConflictError,
    InvalidInputError,
    Limits,
    ProfileConfig,
    RunContext,
    RunNotFoundError,
    Runtime,
    UnknownProfileError,
    WorkerBusyError,
    WorkerStoppedError,
)
from worker_runtime_core.engines import Engine


async def test_input_runs_echo_and_the_transcript_holds_both_entries(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    ack = await rt.send_input("w", "hello")
    assert ack.input_sequence == 0 and not ack.duplicate and ack.run_id
    run = await rt.wait_for_run("w", ack.run_id)
    assert run.status == "completed" and run.error is None and run.ended_at is not None
    page = await rt.transcript("w")
    assert [(e.sequence, e.role, e.content, e.run_id) for e in page.items] == [
        (0, "user", "hello", ack.run_id),
        (1, "assistant", "hello", ack.run_id),
    ]
    assert page.items[0].event_id == ack.event_id
    worker = await rt.get_worker("w")
    assert worker.transcript_len == 2 and worker.status == "idle"
    assert worker.last_run == run and worker.usage.runs == 1


async def test_hundred_concurrent_inputs_give_one_run_and_99_busy(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    accepted: list[str] = []
    busy: list[WorkerBusyError] = []

    async def send(n: int) -> None:
        try:
            accepted.append((await rt.send_input(wid, f"input {n}")).run_id)
        except WorkerBusyError as exc:
            busy.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(100):
            tg.start_soon(send, n)
    assert len(accepted) == 1 and len(busy) == 99
    assert {exc.run_id for exc in busy} == {accepted[0]}
    assert all(exc.retryable for exc in busy)
    worker = await rt.get_worker(wid)
    assert worker.status == "busy" and worker.transcript_len == 1
    assert worker.active_run is not None and worker.active_run.run_id == accepted[0]
    gate.release.set()
    assert (await rt.wait_for_run(wid, accepted[0])).status == "completed"
    assert gate.runs == 1
    inputs = [e for e in (await rt.read_events(worker_id=wid)).events if e.kind == "input_accepted"]
    assert len(inputs) == 1


async def test_busy_input_changes_nothing(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "first")
    before = await rt.get_worker(wid)
    last_event = (await rt.read_events()).next_after
    with pytest.raises(WorkerBusyError) as info:
        await rt.send_input(wid, "second")
    assert info.value.details == {"run_id": ack.run_id}
    assert await rt.get_worker(wid) == before
    assert (await rt.read_events(after=last_event)).events == []


async def test_input_after_the_run_is_accepted_with_the_next_sequence(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    first = await rt.send_input("w", "one")
    await rt.wait_for_run("w", first.run_id)
    second = await rt.send_input("w", "two", kind="system")
    assert second.input_sequence == 2 and second.run_id != first.run_id
    await rt.wait_for_run("w", second.run_id)
    assert [e.role for e in (await rt.transcript("w")).items] == ["user", "assistant", "system", "assistant"]


async def test_repeated_input_id_returns_the_first_ack_and_starts_nothing(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    first = await rt.send_input(wid, "hi", input_id="in-1")
    again = await rt.send_input(wid, "hi", input_id="in-1")  # busy, yet answered first
    assert again.duplicate and not first.duplicate
    assert (again.run_id, again.input_sequence, again.event_id) == (first.run_id, first.input_sequence, first.event_id)
    gate.release.set()
    await rt.wait_for_run(wid, first.run_id)
    after_run = await rt.send_input(wid, "hi", input_id="in-1")
    assert after_run.run_id == first.run_id and after_run.duplicate
    await rt.stop_worker(wid)
    assert (await rt.send_input(wid, "hi", input_id="in-1")).run_id == first.run_id  # before the stopped check
    assert gate.runs == 1
    kinds = [e.kind for e in (await rt.read_events(worker_id=wid)).events]
    assert kinds.count("input_accepted") == 1


async def test_reused_input_id_with_other_content_is_a_conflict(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    ack = await rt.send_input("w", "hi", input_id="k")
    await rt.wait_for_run("w", ack.run_id)
    with pytest.raises(IdempotencyConflictError):
        await rt.send_input("w", "other", input_id="k")
    with pytest.raises(IdempotencyConflictError):
        await rt.send_input("w", "hi", kind="system", input_id="k")
    assert (await rt.get_worker("w")).transcript_len == 2


async def test_input_ids_are_per_worker(rt: Runtime) -> None:
    await rt.create_worker(worker_id="a")
    await rt.create_worker(worker_id="b")
    one = await rt.send_input("a", "hi", input_id="k")
    two = await rt.send_input("b", "hi", input_id="k")
    assert not two.duplicate and one.run_id != two.run_id


async def test_input_ids_expire_after_the_ttl() -> None:
    async with Runtime(limits=Limits(idempotency_ttl_s=0)) as rt:
        await rt.create_worker(worker_id="w")
        first = await rt.send_input("w", "hi", input_id="k")
        await rt.wait_for_run("w", first.run_id)
        second = await rt.send_input("w", "hi", input_id="k")
        assert not second.duplicate and second.run_id != first.run_id


async def test_bad_input_is_invalid_input_and_changes_nothing() -> None:
    async with Runtime(limits=Limits(max_input_bytes=8)) as rt:
        await rt.create_worker(worker_id="w")
        for content, kwargs in [
            ("", {}),
            ("x" * 9, {}),
            ("ééééé", {}),  # 5 characters, 10 bytes
            ("hi", {"kind": "assistant"}),
            ("hi", {"input_id": "../k"}),
            ("hi", {"input_id": ""}),
        ]:
            with pytest.raises(InvalidInputError):
                await rt.send_input("w", content, **kwargs)
        assert (await rt.get_worker("w")).transcript_len == 0
        ok = await rt.send_input("w", "x" * 8)
        assert ok.input_sequence == 0


async def test_input_to_a_stopped_worker_is_refused(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    await rt.stop_worker("w")
    with pytest.raises(WorkerStoppedError):
        await rt.send_input("w", "hi")


class _Failing(Engine):
    name = "failing"

    async def run(self, ctx: RunContext) -> None:
        if ctx.content == "typed":
            raise EngineError("tool_crashed", "the tool crashed")
        raise ZeroDivisionError("boom")


async def test_a_failing_engine_fails_the_run_and_the_runtime_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async with Runtime(profiles={"bad": ProfileConfig("failing")}, engines={"failing": _Failing}) as rt:
        await rt.create_worker(worker_id="bad", profile={"kind": "named", "name": "bad"})
        await rt.create_worker(worker_id="good")
        typed = await rt.wait_for_run("bad", (await rt.send_input("bad", "typed")).run_id)
        assert typed.status == "failed" and typed.error is not None
        assert (typed.error.code, typed.error.message) == ("tool_crashed", "the tool crashed")
        crashed = await rt.wait_for_run("bad", (await rt.send_input("bad", "x")).run_id)
        assert crashed.status == "failed" and crashed.error is not None
        assert (crashed.error.code, crashed.error.message) == (
            "engine_error",
            "the engine failed; see the Runtime's log",
        )
        good = await rt.wait_for_run("good", (await rt.send_input("good", "hi")).run_id)
        assert good.status == "completed"
        assert (await rt.get_worker("bad")).status == "idle"
        diagnostics = await rt.diagnostics()
        assert [d.code for d in diagnostics] == ["tool_crashed", "engine_error"]
        assert "boom" not in diagnostics[1].message
        assert "ZeroDivisionError: boom" in caplog.text  # the log keeps the traceback
        kinds = [e.kind for e in (await rt.read_events(worker_id="bad")).events]
        assert kinds.count("run_failed") == 2


async def test_a_run_past_its_profile_timeout_is_timed_out(rt: Runtime, gate: Gate) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "slow"})
    ack = await rt.send_input("w", "hi")
    run = await rt.wait_for_run("w", ack.run_id)
    assert run.status == "timed_out" and run.error is not None and run.error.code == "timed_out"
    assert gate.cancelled == 1
    assert (await rt.get_worker("w")).status == "idle"
    assert [e.kind for e in (await rt.read_events(worker_id="w")).events][-1] == "run_timed_out"


async def test_get_run_finds_every_run_of_the_worker(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    runs = []
    for text in ["a", "b", "c"]:
        ack = await rt.send_input("w", text)
        runs.append(await rt.wait_for_run("w", ack.run_id))
    for run in runs:
        assert await rt.get_run("w", run.run_id) == run
    with pytest.raises(RunNotFoundError):
        await rt.get_run("w", "run-999999")


async def test_wait_for_run_with_a_timeout_raises_operation_timeout(rt: Runtime, gate: Gate) -> None:
    wid = await gated_worker(rt)
    ack = await rt.send_input(wid, "hi")
    with pytest.raises(TimeoutError):
        await rt.wait_for_run(wid, ack.run_id, timeout=0.01)
    gate.release.set()
    assert (await rt.wait_for_run(wid, ack.run_id, timeout=30)).status == "completed"


async def test_a_profile_that_vanished_makes_input_unknown_profile(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "gate"})
    rt._profiles._profiles.pop("gate")  # what a restart with another config looks like
    with pytest.raises(UnknownProfileError):
        await rt.send_input("w", "hi")
