"""How runs are started (`_backends.RunSpawner`): under asyncio runs take turns in runner tasks, and a run that
suspends never holds up another; under trio each run is a task of the Runtime's task group."""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import pytest
from core_helpers import Gate, gated_worker

from worker_runtime_core import Engine, ProfileConfig, RunContext, Runtime
from worker_runtime_core._backends import RunSpawner

_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="unset")


def _runtime(gate: Gate, **engines: type[Engine]) -> Runtime:
    profiles = {"gate": ProfileConfig("gate"), **{name: ProfileConfig(name) for name in engines}}
    return Runtime(profiles=profiles, engines={"gate": gate.engine(), **engines})


async def test_a_run_that_suspends_does_not_hold_up_the_runs_started_after_it() -> None:
    gate = Gate()
    async with _runtime(gate) as rt:
        blocked = await gated_worker(rt, "g")
        echoes = [(await rt.create_worker(worker_id=f"e{i}")).worker_ref.worker_id for i in range(3)]
        # One step, no suspension between: the gated run and the echo runs are started together.
        first = await rt.send_input(blocked, "wait")
        acks = [await rt.send_input(wid, "hi") for wid in echoes]
        with anyio.fail_after(10):
            runs = [await rt.wait_for_run(wid, ack.run_id) for wid, ack in zip(echoes, acks, strict=True)]
        assert [run.status for run in runs] == ["completed"] * 3
        assert (await rt.get_run(blocked, first.run_id)).status == "running"
        gate.release.set()
        with anyio.fail_after(10):
            assert (await rt.wait_for_run(blocked, first.run_id)).status == "completed"


async def test_a_run_started_by_a_running_engine_does_not_wait_for_that_engine() -> None:
    gate = Gate()
    started: list[str] = []
    sent = anyio.Event()

    class Starter(Engine):
        name = "starter"

        async def run(self, ctx: RunContext) -> None:
            started.append((await runtime.send_input("e", "from the engine")).run_id)
            sent.set()
            await gate.release.wait()
            await ctx.emit("done")

    async with _runtime(gate, starter=Starter) as runtime:
        await runtime.create_worker(worker_id="s", profile={"kind": "named", "name": "starter"})
        await runtime.create_worker(worker_id="e")
        outer = await runtime.send_input("s", "go")
        with anyio.fail_after(10):
            await sent.wait()
            assert (await runtime.wait_for_run("e", started[0])).status == "completed"
        assert (await runtime.get_run("s", outer.run_id)).status == "running"
        gate.release.set()
        with anyio.fail_after(10):
            assert (await runtime.wait_for_run("s", outer.run_id)).status == "completed"


async def test_the_runs_after_a_cancelled_run_complete_and_are_not_cancelled() -> None:
    gate = Gate()
    async with _runtime(gate) as rt:
        blocked = await gated_worker(rt, "g")
        echoes = [(await rt.create_worker(worker_id=f"e{i}")).worker_ref.worker_id for i in range(20)]
        first = await rt.send_input(blocked, "wait")
        await gate.started.wait()
        acks = [await rt.send_input(wid, "hi") for wid in echoes[:10]]
        cancel = await rt.cancel_worker(blocked)
        assert cancel.cancelled_run_id == first.run_id
        acks += [await rt.send_input(wid, "hi") for wid in echoes[10:]]
        with anyio.fail_after(10):
            runs = [await rt.wait_for_run(wid, ack.run_id) for wid, ack in zip(echoes, acks, strict=True)]
        assert [run.status for run in runs] == ["completed"] * 20
        assert gate.cancelled == 1


class _Look(Engine):
    """Records what a run sees of `_CALLER`, then sets it to the run's content (and leaves it set)."""

    name = "look"
    seen: list[tuple[str, str]] = []

    async def run(self, ctx: RunContext) -> None:
        _Look.seen.append((ctx.content, _CALLER.get()))
        _CALLER.set(ctx.content)
        await ctx.emit("seen")


async def test_a_run_sees_its_caller_s_context_and_nothing_an_earlier_run_set() -> None:
    _Look.seen = []
    async with Runtime(profiles={"look": ProfileConfig("look")}, engines={"look": _Look}) as rt:
        for wid in ("a", "b", "c"):
            await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": "look"})
        # a and b are started together (they may share a runner); a sets the variable, b must not see it
        acks = [await rt.send_input("a", "set by a"), await rt.send_input("b", "set by b")]
        token = _CALLER.set("the caller")
        try:
            acks.append(await rt.send_input("c", "set by c"))
        finally:
            _CALLER.reset(token)
        with anyio.fail_after(10):
            for wid, ack in zip("abc", acks, strict=True):
                await rt.wait_for_run(wid, ack.run_id)
        assert _CALLER.get() == "unset"
        # and the next runs, started after those set it, see none of it either
        acks = [await rt.send_input(wid, "again") for wid in "abc"]
        with anyio.fail_after(10):
            for wid, ack in zip("abc", acks, strict=True):
                await rt.wait_for_run(wid, ack.run_id)
    assert sorted(_Look.seen) == [
        ("again", "unset"),
        ("again", "unset"),
        ("again", "unset"),
        ("set by a", "unset"),
        ("set by b", "unset"),
        ("set by c", "the caller"),
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # under trio a run is a task of the task group
async def test_a_run_function_that_raises_is_logged_and_the_runs_queued_behind_it_still_run(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    finished = anyio.Event()

    async def run(n: int) -> None:
        if n == 0:
            raise RuntimeError("a bug in a run")
        ran.append(n)
        if n == 2:
            finished.set()

    async with anyio.create_task_group() as tg:
        spawner = RunSpawner(tg)
        for n in range(3):  # one step: they queue for one runner
            spawner.spawn(run, n)
        with anyio.fail_after(10):
            await finished.wait()
    assert ran == [1, 2]
    assert "a run's task failed" in caplog.text and "a bug in a run" in caplog.text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # under trio the task group holds the runs
async def test_closing_the_runtime_leaves_no_runner_task_behind(anyio_backend: str) -> None:
    before = asyncio.all_tasks()
    async with Runtime() as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        for _ in range(3):  # one after another: the runner parks between them
            ack = await rt.send_input(wid, "hi")
            await rt.wait_for_run(wid, ack.run_id)
        during = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert during  # the Runtime's own task and the parked runner
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    if left:
        await asyncio.wait(left, timeout=5)
    assert [task for task in left if not task.done()] == []
