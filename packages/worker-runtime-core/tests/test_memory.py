"""The memory store: its per-Worker event index follows retention."""

from __future__ import annotations

from worker_runtime_core import Limits, MemoryStore
from worker_runtime_core.records import EventRecord
from worker_runtime_core.stores import Batch


def _event(event_id: int, worker_id: str) -> Batch:
    return Batch(event=EventRecord(event_id, "worker_updated", worker_id, None, 0.0, {}))


async def test_worker_event_index_keeps_only_retained_ids() -> None:
    store = MemoryStore()
    await store.open(None, None, limits=Limits(event_retention=10))
    for n in range(1, 1001):
        await store.write(_event(n, "busy"))
    await store.write(_event(1001, "late"))
    first = store._first_id
    assert first > 1
    index = store._by_worker["busy"]
    kept = [index] if isinstance(index, int) else index
    assert kept == list(range(first, 1001))  # not the 1,000 ids ever written
    page = await store.read_events(first - 1, 1000, "busy")
    assert [e.id for e in page] == kept


async def test_worker_with_no_retained_event_leaves_the_index() -> None:
    store = MemoryStore()
    await store.open(None, None, limits=Limits(event_retention=4))
    await store.write(_event(1, "gone"))
    await store.write(_event(2, "pair"))
    await store.write(_event(3, "pair"))
    for n in range(4, 40):
        await store.write(_event(n, "other"))
    assert "gone" not in store._by_worker and "pair" not in store._by_worker
    assert await store.read_events(store._first_id - 1, 10, "gone") == []


async def test_index_trimmed_to_one_id_is_a_bare_int_and_still_reads() -> None:
    store = MemoryStore()
    await store.open(None, None, limits=Limits(event_retention=4))
    for n in range(1, 8):
        await store.write(_event(n, "w"))
    await store.write(_event(8, "x"))  # 8 events, retention 4: ids 1 to 4 go, 5 to 8 stay
    assert store._first_id == 5
    assert store._by_worker["w"] == [5, 6, 7]
    assert store._by_worker["x"] == 8
    assert [e.id for e in await store.read_events(4, 10, "w")] == [5, 6, 7]
