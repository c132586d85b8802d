"""Start and close: the task group lives in the Runtime's own task, so any cancel scope of the caller is fine."""

from __future__ import annotations

import anyio
import pytest
from core_helpers import Gate, gated_worker

from worker_runtime_core import MemoryStore, ProfileConfig, Runtime, RuntimeUnavailableError


async def test_start_and_close_each_inside_fail_after_close_cleanly() -> None:
    rt = Runtime()
    with anyio.fail_after(10):
        await rt.start()
    wid = (await rt.create_worker()).worker_ref.worker_id
    ack = await rt.send_input(wid, "hi")
    with anyio.fail_after(10):
        await rt.close()
    assert rt.status == "closed"
    assert ack.run_id


async def test_close_inside_fail_after_interrupts_a_run_and_closes() -> None:
    gate = Gate()
    rt = Runtime(profiles={"gate": ProfileConfig("gate")}, engines={"gate": gate.engine()})
    await rt.start()
    wid = await gated_worker(rt)
    await rt.send_input(wid, "hi")
    await gate.started.wait()
    with anyio.fail_after(10):
        await rt.close()
    assert rt.status == "closed"
    assert gate.cancelled == 1


async def test_close_from_another_task_than_start() -> None:
    rt = Runtime()
    await rt.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.close)
    assert rt.status == "closed"


class _SlowClosingStore(MemoryStore):
    """A memory store whose `close` waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = anyio.Event()
        self.finish = anyio.Event()

    async def close(self) -> None:
        self.closing.set()
        await self.finish.wait()


async def test_a_stop_while_close_flushes_the_store_is_runtime_unavailable() -> None:
    store = _SlowClosingStore()
    rt = Runtime(store=store)
    await rt.start()
    wid = (await rt.create_worker()).worker_ref.worker_id
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.close)
        await store.closing.wait()
        with pytest.raises(RuntimeUnavailableError):
            await rt.stop_worker(wid)
        store.finish.set()
    assert rt.status == "closed"


async def test_a_stop_racing_close_either_stops_or_is_runtime_unavailable() -> None:
    rt = Runtime()
    await rt.start()
    wids = [(await rt.create_worker()).worker_ref.worker_id for _ in range(20)]
    answers: list[str] = []

    async def stop(wid: str) -> None:
        try:
            answers.append((await rt.stop_worker(wid)).status)
        except RuntimeUnavailableError:
            answers.append("unavailable")

    async with anyio.create_task_group() as tg:
        for wid in wids[:10]:
            tg.start_soon(stop, wid)
        tg.start_soon(rt.close)
        for wid in wids[10:]:
            tg.start_soon(stop, wid)
    assert rt.status == "closed"
    assert len(answers) == 20 and set(answers) <= {"stopped", "unavailable"}
