"""What differs between asyncio and trio, in one place: how a run's task is spawned.

Under asyncio a run is a plain task (a third of the cost of a task-group spawn); anyio cancel scopes work in it
all the same, the run's task catches everything, and `Runtime.close` waits for every run to end. Under trio it is
spawned in the Runtime's task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from anyio.abc import TaskGroup

__all__ = ["RunSpawner"]

T = TypeVar("T")


class RunSpawner:
    """Spawns run tasks on the running event loop; made once the Runtime has started."""

    __slots__ = ("_loop", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._loop = _running_asyncio_loop()

    def spawn(self, fn: Callable[[T], Coroutine[Any, Any, None]], arg: T) -> asyncio.Task[None] | None:
        """Start ``fn(arg)``; under asyncio returns its task, which the caller must hold alive."""
        if self._loop is not None:
            return self._loop.create_task(fn(arg))
        self._tg.start_soon(fn, arg)
        return None


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # trio
