"""A run's context: what an engine sees of the run it serves."""

from __future__ import annotations

from worker_runtime_core import Engine, ProfileConfig, RunContext, Runtime, WorkerRef


async def test_an_engine_sees_the_worker_ref_and_the_input_of_its_run() -> None:
    seen: list[tuple[WorkerRef, WorkerRef, str, str, str, int]] = []

    class Peek(Engine):
        name = "peek"

        async def run(self, ctx: RunContext) -> None:
            seen.append((ctx.worker_ref, ctx.worker_ref, ctx.run_id, ctx.kind, ctx.content, ctx.input_sequence))
            await ctx.emit("seen")

    async with Runtime(runtime_id="rt-peek", profiles={"peek": ProfileConfig("peek")}, engines={"peek": Peek}) as rt:
        await rt.create_worker(worker_id="w1", profile={"kind": "named", "name": "peek"})
        first = await rt.send_input("w1", "one")
        await rt.wait_for_run("w1", first.run_id)
        second = await rt.send_input("w1", "two", kind="system")
        await rt.wait_for_run("w1", second.run_id)
    ref = WorkerRef(runtime_id="rt-peek", worker_id="w1")
    assert seen == [
        (ref, ref, first.run_id, "user", "one", 0),
        (ref, ref, second.run_id, "system", "two", 2),
    ]
    assert seen[0][0] is seen[0][1]  # made once per run
