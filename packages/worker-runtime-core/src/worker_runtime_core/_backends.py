"""What differs between asyncio and trio, in one place: how runs and the Runtime's own task are spawned.

Under asyncio runs take turns in a few runner tasks rather than a task each (`RunSpawner`): a task costs about as
much as the rest of a run, and a run that never suspends (a memory store, a quick engine) is over within one step
of its runner. A run that suspends keeps its runner, and what is queued behind it moves to a new runner at once,
so no run waits for another. anyio cancel scopes work in a runner all the same (each run enters and leaves its
own), every run catches everything, and `Runtime.close` waits for every run to end. A run sees a copy of its
caller's context, as a task of its own would: a caller whose context differs from the Runtime's gets a task for
its run, and a runner whose context a run changed hands the queue on to a fresh one. Under trio a run is spawned
in the Runtime's task group.

The Runtime's task group lives in a task of its own (`spawn_system_task`), entered there with ``async with``, so
`Runtime.start` and `Runtime.close` can be called from any cancel scope of the caller's task: asyncio's event loop
runs it as a plain task, trio as a system task.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from anyio.abc import TaskGroup

__all__ = ["RunSpawner", "Wakeup", "spawn_system_task"]

logger = logging.getLogger("worker_runtime_core")

T = TypeVar("T")
_copy_context = contextvars.copy_context


class RunSpawner:
    """Starts runs on the running event loop; made once the Runtime has started, in the Runtime's own task.

    Under asyncio a run is queued for a runner task: one that has not begun its first run, is between two, or is
    parked takes it (*free*; the parked one is woken); with none free a new runner starts. A runner that takes a
    run while others wait and no other runner would take them schedules a look for the next turn of the loop: if
    its run has suspended by then, the waiting runs get a runner. A runner whose queue is empty parks, unless one
    is parked already; it ends then, at `close`, or after a run that changed its context (a context variable set
    and not reset), so that the next run does not see it.
    """

    __slots__ = ("_closed", "_context", "_free", "_loop", "_look_scheduled", "_parked", "_queue", "_runners", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._loop = _running_asyncio_loop()
        self._queue: deque[tuple[Callable[[Any], Coroutine[Any, Any, None]], Any]] = deque()
        self._free = 0  # runners that take a queued run before they next suspend (the parked one once woken)
        self._parked: asyncio.Future[None] | None = None  # what wakes the parked runner
        self._runners: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly: these hold them alive
        self._look_scheduled = False
        self._closed = False
        self._context = contextvars.copy_context()

    def spawn(self, fn: Callable[[T], Coroutine[Any, Any, None]], arg: T) -> None:
        """Start ``fn(arg)``: `fn` must catch its own errors (a runner runs the next one after it)."""
        loop = self._loop
        if loop is None:
            self._tg.start_soon(fn, arg)
            return
        if _copy_context() != self._context:  # the caller set a context variable: its run sees it, in a task
            task = loop.create_task(fn(arg))
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)
            return
        self._queue.append((fn, arg))
        parked = self._parked
        if self._free == (parked is not None):  # no runner takes it unless woken or started
            if parked is not None:
                self._parked = None
                parked.set_result(None)
            else:
                self._add_runner()

    def close(self) -> None:
        """No runner parks from now on, and the parked one ends (every run has ended: the Runtime is closing)."""
        self._closed = True
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.set_result(None)

    def _add_runner(self) -> None:
        assert self._loop is not None
        self._free += 1
        task = self._loop.create_task(self._runner(), context=self._context.copy())
        self._runners.add(task)
        task.add_done_callback(self._runners.discard)

    async def _runner(self) -> None:
        queue = self._queue
        base = self._context
        loop = self._loop
        assert loop is not None
        while True:
            while queue:
                fn, arg = queue.popleft()
                self._free -= 1
                if queue and not self._look_scheduled and self._free <= (self._parked is not None):
                    self._look_scheduled = True
                    loop.call_soon(self._look)
                try:
                    await fn(arg)  # a BaseException ends the runner (the loop is going down): nothing is left to start
                except Exception:  # `fn` catches its own errors: only a bug gets here, and the next run still starts
                    logger.exception("a run's task failed")
                self._free += 1
                if _copy_context() != base:  # the run set a context variable: the next run gets a fresh context
                    self._free -= 1
                    self._wake_or_add()
                    return
            if self._parked is not None or self._closed:
                break
            parked = self._parked = loop.create_future()
            await parked  # woken by `spawn` (free all along) or by `close`
            if self._closed and not queue:
                break
        self._free -= 1
        self._wake_or_add()

    def _wake_or_add(self) -> None:
        """Runs are queued and no runner may take them: wake the parked runner, or start one."""
        if self._queue and self._free == (self._parked is not None):
            parked = self._parked
            if parked is not None:
                self._parked = None
                parked.set_result(None)
            else:
                self._add_runner()

    def _look(self) -> None:
        """A turn of the loop after a runner took a run with others waiting: if it has suspended in it, the waiting
        runs get a runner."""
        self._look_scheduled = False
        self._wake_or_add()


class Wakeup:
    """One wake-up of one waiting task, set at most once, made on the event loop: under asyncio a bare future (an
    anyio `Event` holds an `asyncio.Event`, whose deque costs about 750 bytes), under trio a `trio.Event`. Await it
    once; cancellation reaches the waiter as with any await."""

    __slots__ = ("_event", "_future")

    def __init__(self) -> None:
        loop = _running_asyncio_loop()
        self._future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self._event: Any = None
        if loop is None:
            import trio

            self._event = trio.Event()

    def set(self) -> None:
        future = self._future
        if future is None:
            self._event.set()
        elif not future.done():
            future.set_result(None)

    def __await__(self) -> Any:
        future = self._future
        if future is None:
            return self._event.wait().__await__()
        return future.__await__()


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
