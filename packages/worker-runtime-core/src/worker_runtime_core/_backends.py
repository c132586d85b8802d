"""What differs between asyncio and trio, in one place: how a run's task and the Runtime's own task are spawned.

Under asyncio a run is a plain task (a third of the cost of a task-group spawn); anyio cancel scopes work in it
all the same, the run's task catches everything, and `Runtime.close` waits for every run to end. Under trio it is
spawned in the Runtime's task group.

The Runtime's task group lives in a task of its own (`spawn_system_task`), entered there with ``async with``, so
`Runtime.start` and `Runtime.close` can be called from any cancel scope of the caller's task: asyncio's event loop
runs it as a plain task, trio as a system task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from anyio.abc import TaskGroup

__all__ = ["RunSpawner", "spawn_system_task"]

T = TypeVar("T")


class RunSpawner:
    """Spawns run tasks on the running event loop; made once the Runtime has started."""

    __slots__ = ("_loop", "_tg", "create_task")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._loop = _running_asyncio_loop()
        #: Under asyncio the loop's own ``create_task`` (the caller holds the task alive), else None: a caller on a
        #: hot path starts ``fn(arg)`` with it and no call of `spawn` between.
        self.create_task: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = (
            self._loop.create_task if self._loop is not None else None
        )

    def spawn(self, fn: Callable[[T], Coroutine[Any, Any, None]], arg: T) -> asyncio.Task[None] | None:
        """Start ``fn(arg)``; under asyncio returns its task, which the caller must hold alive."""
        if self._loop is not None:
            return self._loop.create_task(fn(arg))
        self._tg.start_soon(fn, arg)
        return None


def spawn_system_task(fn: Callable[[], Awaitable[None]]) -> object:
    """Run ``fn()`` in a task of its own, outside every task group and cancel scope of the caller; returns a handle
    the caller must hold until the task has ended. `fn` must catch its own errors."""
    loop = _running_asyncio_loop()
    if loop is not None:
        return loop.create_task(_awaited(fn))
    import trio.lowlevel

    return trio.lowlevel.spawn_system_task(fn)


async def _awaited(fn: Callable[[], Awaitable[None]]) -> None:
    await fn()


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # trio
