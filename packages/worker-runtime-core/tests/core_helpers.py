"""Helpers of the core tests: the `gate` engine that blocks until the test releases it."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from worker_runtime_core import Engine, RunContext, Runtime


class Gate:
    """Controls the `gate` engine: each run sets `started`, then waits for `release` before it answers."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.runs = 0
        self.cancelled = 0

    def reset(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    def engine(self) -> type[Engine]:
        gate = self

        class GateEngine(Engine):
            name = "gate"

            async def run(self, ctx: RunContext) -> None:
                gate.runs += 1
                gate.started.set()
                try:
                    await gate.release.wait()
                except anyio.get_cancelled_exc_class():
                    gate.cancelled += 1
                    raise
                await ctx.emit(f"released {ctx.content}")

        return GateEngine


async def gated_worker(rt: Runtime, worker_id: str = "w1") -> str:
    """Create a Worker on the `gate` profile and return its id."""
    await rt.create_worker(worker_id=worker_id, profile={"kind": "named", "name": "gate"})
    return worker_id


class Shout(Engine):
    """A test engine that answers in capitals and offers the capability ``volume``."""

    name = "shout"
    capabilities = frozenset({"volume"})

    async def run(self, ctx: RunContext) -> None:
        await ctx.emit(ctx.content.upper() + "!")


def stubborn_engine(gate: Gate) -> type[Engine]:
    """An engine that ignores cancellation until `gate.release` is set (a misbehaving plugin)."""

    class Stubborn(Engine):
        name = "stubborn"

        async def run(self, ctx: RunContext) -> None:
            gate.started.set()
            with anyio.CancelScope(shield=True):
                await gate.release.wait()
            await anyio.lowlevel.checkpoint()

    return Stubborn
