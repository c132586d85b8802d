"""The store protocol's contract, the same assertions for the memory store and the FS store (through Runtime).

A third-party store runs it by adding itself to `store_kind` (a factory, and if it can fail on command, a
`Faults` that makes it refuse writes or fail an fsync): committed id and health are checked under real faults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import anyio
import msgspec
import pytest
from store_faults import FaultyStore, HeldWrite
from store_fs_helpers import DiskFaults

from worker_runtime_core import (
    CursorExpiredError,
    Engine,
    Limits,
    MemoryStore,
    ProfileConfig,
    RunContext,
    RunNotFoundError,
    Runtime,
    RuntimeStore,
    RuntimeUnavailableError,
)
from worker_runtime_core.records import EventRecord, RuntimeStartedData
from worker_runtime_core.stores import store_health
from worker_runtime_core.stores.base import Batch
from worker_runtime_core.times import now
from worker_runtime_store_fs import FsRuntimeStore

StoreFactory = Callable[[Limits], RuntimeStore]


class Faults(Protocol):
    """Real failures under a store: `refuse` makes its writes fail with nothing of them on disk (a full disk),
    `fail_fsync` makes the next write reach the disk and its fsync fail (EIO); `clear` ends both."""

    def refuse(self) -> None: ...
    def fail_fsync(self) -> None: ...
    def clear(self) -> None: ...


FaultsFactory = Callable[[RuntimeStore, pytest.MonkeyPatch], Faults]


class _FsFaults:
    SEGMENT = "[0-9]*.jsonl"

    def __init__(self, store: RuntimeStore, monkeypatch: pytest.MonkeyPatch) -> None:
        assert isinstance(store, FsRuntimeStore)
        self.disk = DiskFaults(store, monkeypatch)

    def refuse(self) -> None:
        self.disk.refuse(self.SEGMENT)

    def fail_fsync(self) -> None:
        self.disk.fail_fsync(self.SEGMENT)

    def clear(self) -> None:
        self.disk.clear()


@pytest.fixture(params=["memory", "fs"])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[StoreFactory, FaultsFactory | None]:
    """A store factory (each call opens the same data afresh) and its faults, None when it cannot fail."""
    if request.param == "memory":
        return (lambda limits: MemoryStore()), None
    return (lambda limits: FsRuntimeStore(tmp_path / "store", segment_bytes=4096, checkpoint_every=7)), _FsFaults


@pytest.fixture
def make_store(store_kind: tuple[StoreFactory, FaultsFactory | None]) -> StoreFactory:
    return store_kind[0]


@pytest.fixture
def make_faults(store_kind: tuple[StoreFactory, FaultsFactory | None]) -> FaultsFactory:
    if store_kind[1] is None:
        pytest.skip("this store cannot fail on command")
    return store_kind[1]


@pytest.fixture
async def rt(make_store: StoreFactory) -> AsyncIterator[Runtime]:
    async with Runtime(runtime_id="rt-c", store=make_store(Limits())) as runtime:
        yield runtime


async def _run(rt: Runtime, wid: str, text: str) -> str:
    ack = await rt.send_input(wid, text)
    await rt.wait_for_run(wid, ack.run_id)
    return ack.run_id


def test_both_stores_implement_the_protocol(make_store: StoreFactory) -> None:
    assert isinstance(make_store(Limits()), RuntimeStore)


async def test_transcript_pages_at_any_position(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    for n in range(30):
        await _run(rt, "w", f"m{n}")
    contents = []
    start: int | None = 0
    while start is not None:
        page = await rt.transcript("w", start=start, limit=7)
        contents += [(e.sequence, e.content) for e in page.items]
        start = page.next_start
    assert contents == [(i, f"m{i // 2}") for i in range(60)]
    assert (await rt.transcript("w", start=58, limit=7)).next_start is None


async def test_event_pages_filtered_and_not_with_no_gaps(rt: Runtime) -> None:
    for wid in ["a", "b", "c"]:
        await rt.create_worker(worker_id=wid)
    for n in range(10):
        await _run(rt, "abc"[n % 3], f"m{n}")
    ids = []
    after = 0
    while True:
        page = await rt.read_events(after=after, limit=4)
        ids += [e.id for e in page.events]
        after = page.next_after
        if not page.has_more:
            break
    assert ids == list(range(1, ids[-1] + 1))
    b_events = []
    after = 0
    while True:
        page = await rt.read_events(after=after, limit=2, worker_id="b")
        b_events += page.events
        after = page.next_after
        if not page.has_more:
            break
    assert all(e.worker_ref is not None and e.worker_ref.worker_id == "b" for e in b_events)
    assert [e.kind for e in b_events].count("run_completed") == 3
    assert [e.id for e in b_events] == sorted(e.id for e in b_events)


async def test_every_run_is_found_and_deleted_workers_lose_their_runs(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    run_ids = [await _run(rt, "w", f"m{n}") for n in range(5)]
    for run_id in run_ids:
        assert (await rt.get_run("w", run_id)).status == "completed"
    with pytest.raises(RunNotFoundError):
        await rt.get_run("w", "run-99999")
    with pytest.raises(RunNotFoundError):
        await rt.get_run("w", "not-a-run")
    await rt.stop_worker("w")
    await rt.delete_worker("w")
    await rt.create_worker(worker_id="w")
    assert (await rt.transcript("w")).total_items == 0
    with pytest.raises(RunNotFoundError):
        await rt.get_run("w", run_ids[0])
    kinds = [e.kind for e in (await rt.read_events(worker_id="w", limit=1000)).events]
    assert kinds.count("worker_created") == 2 and kinds.count("worker_deleted") == 1  # events stay


class _Spy(FaultyStore):
    """Encodes every batch it passes on, to see what each write carries."""

    def __init__(self, inner: RuntimeStore) -> None:
        super().__init__(inner)
        self.batches: list[tuple[str, bytes]] = []

    async def _write(self, write: HeldWrite) -> None:
        self.batches.append((write.batch.event.kind, msgspec.json.encode(write.batch)))
        await super()._write(write)


async def test_a_queued_input_s_content_reaches_the_store_once_and_a_reopened_store_hands_it_back(
    make_store: StoreFactory,
) -> None:
    release = anyio.Event()
    secret = "the queued secret"

    class Talk(Engine):
        name = "talk"

        async def run(self, ctx: RunContext) -> None:
            if ctx.content in ("first", "hold"):
                for n in range(3):
                    await ctx.emit(f"out {n}")
                await release.wait()

    spy = _Spy(make_store(Limits()))
    profiles = {"default": ProfileConfig("talk")}
    async with Runtime(runtime_id="rt-c", store=spy, profiles=profiles, engines={"talk": Talk}) as rt:
        await rt.create_worker(worker_id="w")
        first = await rt.send_input("w", "first")
        queued = await rt.send_input("w", secret, on_busy="enqueue")
        await rt.send_input("w", "hold", on_busy="enqueue")
        await rt.send_input("w", "another", on_busy="enqueue")
        await rt.cancel_worker("w", run_id=first.run_id)  # a run end, with the queue re-written: it starts
        await rt.wait_for_run("w", queued.run_id)  # then "hold" starts, and "another" stays queued
    carrying = [kind for kind, encoded in spy.batches if secret.encode() in encoded]
    assert carrying == ["input_accepted", "run_started"]  # its acceptance, then its transcript entry at its start
    accepted = next(msgspec.json.decode(e) for k, e in spy.batches if k == "input_accepted" and secret.encode() in e)
    assert accepted["queued_content"] == secret and secret not in str(accepted["worker"])
    store = make_store(Limits())
    state = await store.open("rt-c", None, limits=Limits())
    try:
        if state.workers:  # a durable store: the run still queued comes back with its content
            (worker,) = state.workers
            assert [state.queued_content.get(q.run_id) for q in worker.queued] == ["another"]
    finally:
        await store.close()


async def test_queued_inputs_read_back_with_their_events_runs_and_entries(make_store: StoreFactory) -> None:
    release = anyio.Event()

    class Held(Engine):
        name = "held"

        async def run(self, ctx: RunContext) -> None:
            if ctx.content == "first":
                await release.wait()
            await ctx.emit(f"did {ctx.content}")

    profiles = {"default": ProfileConfig("held")}
    async with Runtime(runtime_id="rt-c", store=make_store(Limits()), profiles=profiles, engines={"held": Held}) as rt:
        await rt.create_worker(worker_id="w")
        await rt.send_input("w", "first")
        gone = await rt.send_input("w", "secret one", input_id="k1", on_busy="enqueue")
        kept = await rt.send_input("w", "secret two", on_busy="enqueue")
        await rt.cancel_worker("w", run_id=gone.run_id)
        release.set()
        await rt.wait_for_run("w", kept.run_id)
        events = (await rt.read_events(worker_id="w", limit=1000)).events
        accepted = [e.data for e in events if e.kind == "input_accepted"]
        assert accepted[1:] == [
            {"input_sequence": None, "input_id": "k1", "kind": "user", "queued": True},
            {"input_sequence": None, "input_id": None, "kind": "user", "queued": True},
        ]
        assert "secret" not in str([e.data for e in events])  # the content is never in served event data
        (started,) = [e for e in events if e.kind == "run_started"]
        assert (started.run_id, started.data) == (kept.run_id, {"input_sequence": 2, "input_id": None, "kind": "user"})
        frames = {f.id: f for f in (await rt.read_stream(0, 1000, worker_id="w")).events}
        assert frames[gone.event_id].entry is None
        entry = frames[started.id].entry
        assert entry is not None and (entry.sequence, entry.content, entry.event_id) == (2, "secret two", started.id)
        cancelled = await rt.get_run("w", gone.run_id)
        assert (cancelled.status, cancelled.input_sequence) == ("cancelled", None)
        assert (await rt.transcript("w", run_id=gone.run_id)).items == []
        assert [e.content for e in (await rt.transcript("w", run_id=kept.run_id)).items] == [
            "secret two",
            "did secret two",
        ]


async def test_long_poll_wakes_on_a_write(rt: Runtime) -> None:
    await rt.create_worker(worker_id="w")
    after = (await rt.read_events()).next_after
    got = []

    async def poll() -> None:
        got.append(await rt.read_events(after=after, wait=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.wait_all_tasks_blocked()
        await rt.send_input("w", "wake")
    assert got[0].events[0].kind == "input_accepted"


async def test_retention_keeps_at_least_the_newest(make_store: StoreFactory) -> None:
    limits = Limits(event_retention=5)
    async with Runtime(store=make_store(limits), limits=limits) as rt:
        for n in range(80):
            await rt.create_worker(worker_id=f"w{n:02d}")
        with pytest.raises(CursorExpiredError) as info:
            await rt.read_events(after=0)
        oldest = info.value.details["oldest_id"]
        page = await rt.read_events(after=oldest - 1, limit=1000)
        assert page.events[-1].id == 81 and len(page.events) >= 5
        assert [e.id for e in page.events] == list(range(oldest, 82))


async def test_concurrent_inputs_on_many_workers_are_all_kept(rt: Runtime) -> None:
    wids = [f"w{n}" for n in range(20)]
    for wid in wids:
        await rt.create_worker(worker_id=wid)

    async def drive(wid: str) -> None:
        for n in range(5):
            await _run(rt, wid, f"{wid}-{n}")

    async with anyio.create_task_group() as tg:
        for wid in wids:
            tg.start_soon(drive, wid)
    for wid in wids:
        items = (await rt.transcript(wid)).items
        assert [e.content for e in items if e.role == "user"] == [f"{wid}-{n}" for n in range(5)]
    ids = [e.id for e in (await rt.read_events(limit=1000)).events]
    assert ids == list(range(1, len(ids) + 1))


async def test_committed_id_is_the_newest_event_and_a_refused_write_leaves_it(make_store: StoreFactory) -> None:
    store = FaultyStore(make_store(Limits()))
    async with Runtime(store=store) as rt:
        assert store.inner.committed_id == 1  # runtime_started
        await rt.create_worker(worker_id="w")
        newest = (await rt.read_events()).next_after
        assert store.inner.committed_id == newest == 2
        store.failing = True
        with pytest.raises(RuntimeUnavailableError):
            await rt.send_input("w", "lost")
        store.failing = False
        assert store.inner.committed_id == newest
        ack = await rt.send_input("w", "kept")
        assert ack.event_id == newest + 1
        await rt.wait_for_run("w", ack.run_id)


async def test_a_failed_input_write_leaves_no_stop_waiting(make_store: StoreFactory) -> None:
    store = FaultyStore(make_store(Limits()))
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        store.hold = True
        stopped = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def send() -> None:
                    with pytest.raises(RuntimeUnavailableError):
                        await rt.send_input("w", "lost")

                async def stop() -> None:
                    stopped.append(await rt.stop_worker("w"))

                tg.start_soon(send)
                await store.wait_held(1)
                tg.start_soon(stop)
                await anyio.wait_all_tasks_blocked()
                store.hold = False
                store.fail_ids.add(store.held[0].batch.event.id)
                store.release_all()
        assert stopped[0].status == "stopped" and stopped[0].cancelled_run_id is None
        assert (await rt.get_worker("w")).transcript_len == 0


# --- health and committed id under real faults --------------------------------------------------------------


async def test_health_is_ok_from_open_through_writes(make_store: StoreFactory) -> None:
    store = make_store(Limits())
    async with Runtime(store=store) as rt:
        assert store_health(store) == rt.store_health == "ok"
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "hi")
        assert store_health(store) == rt.store_health == "ok"


async def test_a_refused_write_keeps_committed_id_and_health_cannot_write_until_a_write_succeeds(
    make_store: StoreFactory, make_faults: FaultsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(Limits())
    faults = make_faults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        committed = store.committed_id
        faults.refuse()
        for _ in range(2):
            with pytest.raises(RuntimeUnavailableError) as info:
                await rt.send_input("w", "lost")
            assert info.value.details.get("outcome") != "unknown"
            assert store.committed_id == committed
            assert store_health(store) == "cannot_write"
        faults.clear()
        ack = await rt.send_input("w", "kept")  # no restart
        assert ack.event_id == committed + 1
        assert store_health(store) == "ok"
        await rt.wait_for_run("w", ack.run_id)


async def test_an_unknown_outcome_keeps_its_ids_taken_and_refuses_every_write_until_reopened(
    make_store: StoreFactory, make_faults: FaultsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(Limits())
    faults = make_faults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        confirmed = store.committed_id
        faults.fail_fsync()
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.send_input("w", "unknown", input_id="in-1")
        assert info.value.details == {"outcome": "unknown"}
        assert store.committed_id >= confirmed + 1  # its id may be on disk
        faults.clear()
        for _ in range(2):
            with pytest.raises(RuntimeUnavailableError) as info:
                await rt.create_worker()
            assert info.value.details == {"outcome": "unknown"}
            assert store_health(store) == "outcome_unknown"
    again = make_store(Limits())
    async with Runtime(store=again) as rt:
        assert store_health(again) == "ok"
        ids = [e.id for e in (await rt.read_events(limit=1000)).events]
        assert ids == sorted(set(ids)) and ids.count(confirmed + 1) <= 1
        ack = await rt.send_input("w", "unknown", input_id="in-1")  # a retry with the same input_id is safe
        assert ack.event_id > confirmed
        await rt.wait_for_run("w", ack.run_id)
        assert (await rt.send_input("w", "next")).event_id > max(ids)


async def test_write_many_when_offered_writes_the_batches_in_order_and_answers_each(make_store: StoreFactory) -> None:
    store = make_store(Limits())
    write_many = getattr(store, "write_many", None)
    if write_many is None:
        pytest.skip("this store offers no write_many (optional)")
    await store.open("rt-c", None, limits=Limits())
    try:
        first = store.committed_id + 1
        batches = [
            Batch(event=EventRecord(first + n, "runtime_started", None, None, now(), RuntimeStartedData("x")))
            for n in range(3)
        ]
        assert await write_many(batches) == [None, None, None]
        assert store.committed_id == first + 2
        assert [e.id for e in await store.read_events(first - 1, 10)] == [first, first + 1, first + 2]
        assert await write_many([]) == []
    finally:
        await store.close()
