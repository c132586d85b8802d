"""Cancel and stop are bounded by `operation_timeout_s`, and the work they started completes later."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from core_helpers import Gate, stubborn_engine

from worker_runtime_core import Limits, OperationTimeoutError, ProfileConfig, Runtime


@pytest.fixture
async def rt(gate: Gate) -> AsyncIterator[Runtime]:
    async with Runtime(
        limits=Limits(operation_timeout_s=0.05),
        profiles={"default": ProfileConfig("stubborn")},
        engines={"stubborn": stubborn_engine(gate)},
    ) as runtime:
        yield runtime


async def _wait_for_kind(rt: Runtime, worker_id: str, kind: str) -> int:
    after = 0
    while True:
        page = await rt.read_events(after=after, worker_id=worker_id, wait=10)
        assert page.events, f"no {kind} event within 10 s"
        for event in page.events:
            if event.kind == kind:
                return event.id
        after = page.next_after


async def test_a_cancel_that_outlasts_the_timeout_raises_and_the_run_still_ends_cancelled(
    rt: Runtime, gate: Gate
) -> None:
    await rt.create_worker(worker_id="w")
    ack = await rt.send_input("w", "x")
    await gate.started.wait()
    with pytest.raises(OperationTimeoutError) as info:
        await rt.cancel_worker("w")
    assert info.value.retryable
    assert (await rt.get_worker("w")).status == "busy"
    gate.release.set()
    assert (await rt.wait_for_run("w", ack.run_id)).status == "cancelled"
    assert (await rt.get_worker("w")).status == "idle"


async def test_a_stop_that_outlasts_the_timeout_completes_later(rt: Runtime, gate: Gate) -> None:
    await rt.create_worker(worker_id="w")
    ack = await rt.send_input("w", "x")
    await gate.started.wait()
    with pytest.raises(OperationTimeoutError):
        await rt.stop_worker("w")
    from worker_runtime_core import WorkerStoppedError

    with pytest.raises(WorkerStoppedError):  # no input sneaks in while the stop is under way
        await rt.send_input("w", "y")
    gate.release.set()
    stopped_event = await _wait_for_kind(rt, "w", "worker_stopped")
    worker = await rt.get_worker("w")
    assert worker.status == "stopped" and worker.last_event_id == stopped_event
    assert (await rt.get_run("w", ack.run_id)).status == "cancelled"
    again = await rt.stop_worker("w")
    assert (again.status, again.event_id) == ("stopped", None)
