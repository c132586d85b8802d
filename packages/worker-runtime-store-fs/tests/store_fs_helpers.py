"""Helpers of the FS store tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio

from worker_runtime_core import Engine, RunContext


def crash_copy(root: Path, target: Path) -> Path:
    """What a process crash (SIGKILL) leaves: the files as they are now, with nobody holding the lock."""
    shutil.copytree(root, target)
    return target


class Hold:
    """An engine that starts, then waits until `release` is set (so a run is in flight at a crash)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    def engine(self) -> type[Engine]:
        hold = self

        class HoldEngine(Engine):
            name = "hold"

            async def run(self, ctx: RunContext) -> None:
                hold.started.set()
                await hold.release.wait()
                await ctx.emit("done")

        return HoldEngine
