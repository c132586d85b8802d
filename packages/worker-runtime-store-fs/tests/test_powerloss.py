"""Power cuts under the FS store (the `powerloss` layer): what was acknowledged is there after recovery."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest
from powerloss import PowerLoss
from store_fs_helpers import DiskFaults, Hold, crash_copy

from worker_runtime_core import (
    ConfigError,
    CursorExpiredError,
    Engine,
    Limits,
    ProfileConfig,
    RunContext,
    Runtime,
    RuntimeUnavailableError,
    WorkerNotFoundError,
    WorkerRuntimeError,
)
from worker_runtime_store_fs import FsRuntimeStore
from worker_runtime_store_fs import store as store_module

# Small segments and frequent checkpoints: a few inputs rotate the log and checkpoint several times.
_SMALL = {"segment_bytes": 700, "checkpoint_every": 5}
_TORN = ("warning", "torn_tail_repaired")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # these drive the store through many power cuts: one event loop is enough


async def _run_ends_or_power_goes(rt: Runtime, disk: PowerLoss, run_id: str) -> None:
    """Wait for the run's end; once the power is off its end can never be written (the run stays `running`
    until a restart marks it `interrupted`), so stop waiting then. Polls the power every 50 ms."""
    while True:
        with anyio.move_on_after(0.05):
            await rt.wait_for_run("w", run_id)
            return
        if disk.off:
            raise RuntimeUnavailableError("the power is off")


async def _write_until_cut(
    root: Path, cut: int | None, inputs: int = 3, *, delete_first: bool = False, **options: object
) -> tuple[PowerLoss, list]:
    """Start a Runtime, create a Worker, then cut the power after `cut` more writes while inputs go in.

    With `delete_first`, a Worker with an input key is deleted first, so the next checkpoint rewrites the key file.
    """
    acked: list[tuple[str, str]] = []
    with PowerLoss(root) as disk:
        async with Runtime(runtime_id="rt-p", display_name="P", store=FsRuntimeStore(root, **options)) as rt:  # type: ignore[arg-type]
            if delete_first:
                await rt.create_worker(worker_id="gone")
                await rt.wait_for_run("gone", (await rt.send_input("gone", "bye", input_id="g0")).run_id)
                await rt.stop_worker("gone")
                await rt.delete_worker("gone")
            await rt.create_worker(worker_id="w")
            if cut is not None:
                disk.arm(cut)
            try:
                for i in range(inputs):
                    ack = await rt.send_input("w", f"in-{i}", input_id=f"k{i}")
                    acked.append((f"in-{i}", ack.run_id))
                    await _run_ends_or_power_goes(rt, disk, ack.run_id)
            except WorkerRuntimeError:
                pass
    disk.power_cut()
    return disk, acked


async def _check_recovered(
    root: Path, acked: list[tuple[str, str]], *, repairs: bool = False, deleted: str | None = None, **options: object
) -> None:
    """Everything acknowledged is there; with `repairs`, projections written since the checkpoint (never fsynced)
    may need a warned repair, but nothing may be an error."""
    async with Runtime(store=FsRuntimeStore(root, **options)) as rt:  # type: ignore[arg-type]
        assert rt.runtime_id == "rt-p" and rt.display_name == "P"
        diagnostics = await rt.diagnostics()
        if deleted is not None:  # a Worker deleted before the cut stays gone, and nothing is said of its files
            assert not [d for d in diagnostics if d.worker_ref is not None and d.worker_ref.worker_id == deleted]
            with pytest.raises(WorkerNotFoundError):
                await rt.get_worker(deleted)
        problems = [(d.level, d.code, d.message) for d in diagnostics]
        if repairs:
            problems = [p for p in problems if (p[0], p[1]) not in {("warning", "index_rebuilt"), _TORN}]
        assert problems == []  # a power cut under fsync=always needs no repair of anything acknowledged
        page = await rt.transcript("w")
        assert page.total_items == len(page.items)
        assert [e.sequence for e in page.items] == list(range(len(page.items)))
        users = [(e.content, e.run_id) for e in page.items if e.role == "user"]
        assert users[: len(acked)] == acked  # every acknowledged input, in order
        assert len(users) <= len(acked) + 1  # at most the one in flight at the cut, never a later one
        for _, run_id in users:
            assert (await rt.get_run("w", run_id)).status in {"completed", "interrupted"}
        for i, (content, run_id) in enumerate(acked):  # idempotency keys survive too: a retry starts nothing
            again = await rt.send_input("w", content, input_id=f"k{i}")
            assert (again.duplicate, again.run_id) == (True, run_id)
        events = (await rt.read_events(limit=1000)).events
        assert [e.id for e in events] == list(range(1, len(events) + 1))  # no gap, nothing served twice
        assert (await rt.read_events(after=events[-1].id)).events == []


async def test_a_power_cut_at_any_write_keeps_every_acknowledged_input(tmp_path: Path) -> None:
    disk, acked = await _write_until_cut(tmp_path / "full", None, **_SMALL)
    assert len(list((tmp_path / "full" / "events").glob("*.jsonl"))) > 2  # the sweep crosses rotations
    await _check_recovered(tmp_path / "full", acked, **_SMALL)
    total = disk.writes
    for cut in range(total):
        root = tmp_path / f"cut-{cut}"
        _, acked = await _write_until_cut(root, cut, **_SMALL)
        await _check_recovered(root, acked, **_SMALL)


class _Held(Engine):
    """Runs until cancelled (before the cut), so that inputs queue behind it."""

    name = "held"

    async def run(self, ctx: RunContext) -> None:
        await anyio.sleep_forever()


class _Answer(Engine):
    name = "answer"

    async def run(self, ctx: RunContext) -> None:
        await ctx.emit(f"did {ctx.content}")


def _queue_runtime(root: Path, engine: str, limits: Limits | None = None, **options: object) -> Runtime:
    return Runtime(
        runtime_id="rt-p",
        store=FsRuntimeStore(root, **(options or _SMALL)),  # type: ignore[arg-type]
        profiles={"work": ProfileConfig(engine)},
        engines={"held": _Held, "answer": _Answer},
        limits=limits,
    )


async def _enqueue_until_cut(root: Path, cut: int | None) -> tuple[PowerLoss, list[str]]:
    acked: list[str] = []
    with PowerLoss(root) as disk:
        # Retention drops the log segments older than each checkpoint: a queued input whose input_accepted line
        # is gone with them is found in its Worker's queued.json.
        async with _queue_runtime(root, "held", limits=Limits(event_retention=2)) as rt:
            await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "work"})
            await rt.send_input("w", "first")
            if cut is not None:
                disk.arm(cut)
            try:
                for i in range(4):
                    acked.append((await rt.send_input("w", f"q{i}", input_id=f"k{i}", on_busy="enqueue")).run_id)
            except WorkerRuntimeError:
                pass
    disk.power_cut()
    return disk, acked


async def test_a_power_cut_at_any_write_keeps_every_acknowledged_queued_input(tmp_path: Path) -> None:
    disk, acked = await _enqueue_until_cut(tmp_path / "full", None)
    assert len(acked) == 4
    for cut in [None, *range(disk.writes)]:
        root = tmp_path / f"cut-{cut}"
        _, acked = await _enqueue_until_cut(root, cut)
        async with _queue_runtime(root, "answer") as rt:
            worker = await rt.get_worker("w")
            runs = [r for r in (worker.active_run.run_id if worker.active_run else None, *worker.queued_runs) if r]
            for run_id in runs:
                await rt.wait_for_run("w", run_id)
            try:
                events = (await rt.read_events(limit=1000)).events
            except CursorExpiredError as exc:  # retention dropped the oldest (the run_started of now are kept)
                events = (await rt.read_events(after=exc.details["oldest_id"] - 1, limit=1000)).events
            started = [e.run_id for e in events if e.kind == "run_started"]
            assert started[: len(acked)] == acked and len(started) <= len(acked) + 1  # at most the one in flight
            for run_id in started:
                assert (await rt.get_run("w", run_id)).status == "completed"
            users = [e.content for e in (await rt.transcript("w")).items if e.role == "user"]
            assert users[: len(acked) + 1] == ["first", *[f"q{i}" for i in range(len(acked))]]
            for i, run_id in enumerate(acked):  # the keys survive too: a retry queues nothing
                again = await rt.send_input("w", f"q{i}", input_id=f"k{i}", on_busy="enqueue")
                assert (again.duplicate, again.run_id, again.queued) == (True, run_id, True)


async def test_runs_that_ended_out_of_acceptance_order_are_all_found_after_a_power_cut(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with PowerLoss(root) as disk:
        async with _queue_runtime(root, "held", checkpoint_every=10_000) as rt:  # no checkpoint before the cut
            await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "work"})
            first = (await rt.send_input("w", "first")).run_id
            queued = (await rt.send_input("w", "later", on_busy="enqueue")).run_id
            await rt.cancel_worker("w", run_id=queued)  # the later run ends first
            await rt.cancel_worker("w", run_id=first)
            await rt.send_input("w", "last")  # the Worker's last run: the two above are read from its runs log
            await rt.cancel_worker("w")
            disk.cut()  # the runs log (a projection, fsynced at checkpoints only) is lost; the event log is not
    disk.power_cut()
    async with _queue_runtime(root, "answer") as rt:
        for run_id in (first, queued):
            assert (await rt.get_run("w", run_id)).status == "cancelled"


async def test_a_checkpoint_made_durable_by_one_sync_keeps_every_acknowledged_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint with many files to make durable (a burst of creates) syncs the disk once instead of an fsync
    # per file; lowered here so every checkpoint of this small run takes that way.
    monkeypatch.setattr(store_module, "_SYNC_ALL_AT", 0)
    _, acked = await _write_until_cut(tmp_path / "db", None, inputs=4, **_SMALL)
    await _check_recovered(tmp_path / "db", acked, **_SMALL)


async def test_a_power_cut_right_after_an_acknowledged_create_keeps_the_worker(tmp_path: Path) -> None:
    # The first segment's directory entry must be durable before its first line is acknowledged.
    root = tmp_path / "db"
    with PowerLoss(root) as disk:
        async with Runtime(runtime_id="rt-p", store=FsRuntimeStore(root)) as rt:
            await rt.create_worker(worker_id="w")
            disk.arm(0)
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        assert (await rt.get_worker("w")).status == "idle"


@pytest.mark.parametrize("fsync", ["always", "batch"])
async def test_a_create_taken_back_stays_gone_after_a_power_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str
) -> None:
    # Its log line went in (and, with `always`, was fsynced) before its files failed: the cut must be durable.
    root = tmp_path / "db"
    with PowerLoss(root) as disk:
        store = FsRuntimeStore(root, fsync=fsync, fsync_interval_ms=1)  # type: ignore[arg-type]
        faults = DiskFaults(store, monkeypatch)
        async with Runtime(runtime_id="rt-p", store=store) as rt:
            await rt.create_worker(worker_id="w")
            faults.refuse("worker.json")
            with pytest.raises(RuntimeUnavailableError):
                await rt.create_worker(worker_id="v")
            disk.arm(0)
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        assert (await rt.get_worker("w")).status == "idle"
        with pytest.raises(WorkerNotFoundError):
            await rt.get_worker("v")
        assert (await rt.read_events(worker_id="v")).events == []


async def test_a_rotated_segment_is_durable_under_batch(tmp_path: Path) -> None:
    # A batch flush covers the current segment only: each commit waits for the flush that covers it before the next
    # can start a segment, and rotation itself makes the closed one's index durable.
    root = tmp_path / "db"
    options = {"fsync": "batch", "fsync_interval_ms": 5, "segment_bytes": 700}
    with PowerLoss(root) as disk:
        async with Runtime(runtime_id="rt-p", store=FsRuntimeStore(root, **options)) as rt:  # type: ignore[arg-type]
            await rt.create_worker(worker_id="w")
            for i in range(3):
                await rt.wait_for_run("w", (await rt.send_input("w", f"in-{i}")).run_id)
            events = (await rt.read_events(limit=1000)).events
            disk.arm(0)
    disk.power_cut()
    segments = sorted(int(p.stem) for p in (root / "events").glob("*.jsonl"))
    assert len(segments) > 2
    async with Runtime(store=FsRuntimeStore(root, **options)) as rt:  # type: ignore[arg-type]
        assert [d.code for d in await rt.diagnostics()] == []
        kept = (await rt.read_events(limit=1000)).events
        sealed = [e for e in events if e.id < segments[-1]]
        assert kept[: len(sealed)] == sealed


async def test_a_power_cut_while_opening_a_new_store_leaves_it_openable(tmp_path: Path) -> None:
    full = tmp_path / "full"
    with PowerLoss(full) as disk:
        store = FsRuntimeStore(full)
        await store.open("rt-p", None, limits=Limits())
        opening = disk.writes
        await store.close()
    for cut in range(opening):
        root = tmp_path / f"cut-{cut}"
        with PowerLoss(root, cut_after=cut):
            store = FsRuntimeStore(root)
            with pytest.raises(ConfigError):
                await store.open("rt-p", None, limits=Limits())
            await store.close()
        async with Runtime(store=FsRuntimeStore(root)) as rt:
            assert [d.code for d in await rt.diagnostics()] == []


async def test_a_new_display_name_survives_a_power_cut_once_the_runtime_has_started(tmp_path: Path) -> None:
    root = tmp_path / "db"
    async with Runtime(runtime_id="rt-p", display_name="Old", store=FsRuntimeStore(root)):
        pass
    with PowerLoss(root) as disk:
        async with Runtime(display_name="New", store=FsRuntimeStore(root)):
            disk.arm(0)  # started: the renamed runtime record must be durable by now
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        assert (rt.runtime_id, rt.display_name) == ("rt-p", "New")


async def test_a_power_cut_after_a_delete_keeps_every_input_key(tmp_path: Path) -> None:
    """A delete makes the next checkpoint rewrite the key file whole: the rewrite is durable before it counts."""
    disk, acked = await _write_until_cut(tmp_path / "full", None, delete_first=True, **_SMALL)
    await _check_recovered(tmp_path / "full", acked, deleted="gone", **_SMALL)
    for cut in range(disk.writes):
        root = tmp_path / f"cut-{cut}"
        _, acked = await _write_until_cut(root, cut, delete_first=True, **_SMALL)
        await _check_recovered(root, acked, repairs=True, deleted="gone", **_SMALL)


async def test_under_batch_an_acknowledgement_waits_for_the_fsync_that_covers_it(tmp_path: Path) -> None:
    """`fsync = "batch"` acknowledges after the next batch fsync: what was acknowledged survives a power cut at
    once after the answer, before any later flush."""
    root = tmp_path / "db"
    with PowerLoss(root) as disk:
        store = FsRuntimeStore(root, fsync="batch", fsync_interval_ms=20)
        async with Runtime(runtime_id="rt-p", store=store) as rt:
            await rt.create_worker(worker_id="w")
            ack = await rt.send_input("w", "kept", input_id="k0")
            disk.cut()
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        assert [(e.content, e.run_id) for e in (await rt.transcript("w")).items][:1] == [("kept", ack.run_id)]
        assert (await rt.send_input("w", "kept", input_id="k0")).duplicate


class _KillAtFullSegment(PowerLoss):
    """The process dies at the fsync of the commit that fills a segment: its lines are written, not durable."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        super().__init__(root)
        self.segment_bytes = segment_bytes
        self.killed = False

    def fsync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not self.killed and path.endswith(".jsonl") and os.fstat(fd).st_size >= self.segment_bytes:
            self.killed = True
            self.cut()
        super().fsync(fd)


async def test_lines_a_killed_process_left_unsynced_are_durable_before_the_next_start_rotates_past_them(
    tmp_path: Path,
) -> None:
    """A process killed between a commit's write and its fsync leaves lines the page cache keeps: the next start
    adopts and serves them. When that commit filled the segment, the next start's first line opens a new one;
    sealing the full segment must make the adopted lines durable, or a later power cut takes back events that
    were served while the ones after them survive (a gap in the ids)."""
    root = tmp_path / "db"
    options = {"segment_bytes": 1500}
    with _KillAtFullSegment(root, options["segment_bytes"]) as disk:
        async with Runtime(runtime_id="rt-p", store=FsRuntimeStore(root, **options)) as rt:
            await rt.create_worker(worker_id="w")
            with pytest.raises(RuntimeUnavailableError):
                for i in range(20):
                    await _run_ends_or_power_goes(rt, disk, (await rt.send_input("w", f"in-{i}")).run_id)
        assert disk.killed
        written = len((root / "events" / f"{1:020d}.jsonl").read_bytes().splitlines())  # the last not durable
        disk.resume()  # only the process died
        async with Runtime(store=FsRuntimeStore(root, **options)) as rt:
            ack = await rt.send_input("w", "after")
            await rt.wait_for_run("w", ack.run_id)
            served = (await rt.read_events(limit=1000)).events
            assert served[written - 1].id == written  # served, as everything the log holds
            firsts = sorted(int(p.stem) for p in (root / "events").glob("*.jsonl"))
            assert firsts[:2] == [1, written + 1]  # the start's first line opened the second segment
            disk.cut()
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root, **options)) as rt:
        assert [d.code for d in await rt.diagnostics()] == []
        kept = (await rt.read_events(limit=1000)).events
        assert kept[: len(served)] == served


class _KillAtFsync(PowerLoss):
    """The process dies at the fsync of the event log's `n`-th commit after the first: its lines are written, not
    durable."""

    def __init__(self, root: Path, n: int) -> None:
        super().__init__(root)
        self.left = n
        self.killed = False

    def fsync(self, fd: int) -> None:
        if not self.killed and os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            self.left -= 1
            if self.left < 0:
                self.killed = True
                self.cut()
        super().fsync(fd)


async def test_lines_a_killed_process_left_unsynced_are_durable_once_the_next_start_has_opened(
    tmp_path: Path,
) -> None:
    """The next start adopts what a killed process wrote but never fsynced, and serves it and checkpoints it
    before its own first write: a power cut then must take none of it back (or the next start would hand the
    same event ids out again for other events, and a run's end would be gone from the log)."""
    root = tmp_path / "db"
    with _KillAtFsync(root, 4) as disk:
        async with Runtime(runtime_id="rt-p", store=FsRuntimeStore(root)) as rt:
            await rt.create_worker(worker_id="w")
            with pytest.raises(RuntimeUnavailableError):
                for i in range(5):
                    await _run_ends_or_power_goes(rt, disk, (await rt.send_input("w", f"in-{i}")).run_id)
        assert disk.killed
        disk.resume()  # only the process died
        store = FsRuntimeStore(root)
        await store.open(None, None, limits=Limits())
        served = await store.read_events(0, 1000)
        disk.cut()  # the power goes before this start writes anything
        await store.close()
    disk.power_cut()
    assert [e.kind for e in served][-1] == "run_completed"  # the killed commit ended a run
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        assert [d.code for d in await rt.diagnostics()] == []
        kept = (await rt.read_events(limit=1000)).events
        assert [(e.id, e.kind, e.run_id) for e in kept[: len(served)]] == [(e.id, e.kind, e.run_id) for e in served]


class _CheckpointBetweenRunLineAndIndex(PowerLoss):
    """Once armed: the background checkpoint fsyncs runs.jsonl after the writer appended a run's line and runs.idx
    before the writer appends that line's index record, and the power goes as the checkpoint writes its record (the
    ordering a loaded machine gave the sweep above, held here with events instead of left to the scheduler)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False
        self.line_written = threading.Event()
        self.index_synced = threading.Event()

    def _path(self, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def _in_checkpoint(self) -> bool:
        return threading.current_thread().name == "worker-runtime-checkpoint"

    def open(self, path: object, flags: int, mode: int = 0o644) -> int:  # type: ignore[override]
        if self.armed and self._in_checkpoint() and str(path).endswith(".checkpoint.json.tmp"):
            self.cut()
        return super().open(path, flags, mode)  # type: ignore[arg-type]

    def write(self, fd: int, data: bytes) -> None:
        path = self._path(fd)
        if self.armed and not self._in_checkpoint() and path.endswith("runs.idx"):
            assert self.index_synced.wait(30), "the checkpoint never fsynced runs.idx"
        super().write(fd, data)
        if self.armed and not self._in_checkpoint() and path.endswith("runs.jsonl"):
            self.line_written.set()

    def fsync(self, fd: int) -> None:
        path = self._path(fd)
        if self.armed and self._in_checkpoint() and path.endswith("runs.jsonl"):
            assert self.line_written.wait(30), "the writer never appended the run's line"
        super().fsync(fd)
        if self.armed and self._in_checkpoint() and path.endswith("runs.idx"):
            self.index_synced.set()


async def test_a_power_cut_after_a_checkpoint_flushed_a_run_line_but_not_its_index_keeps_every_run(
    tmp_path: Path,
) -> None:
    """The checkpoint that fails leaves the previous one in force; the next start replays the runs since and indexes
    the run line that was durable without its index record under its run number, so every run is still found."""
    root = tmp_path / "db"
    runs: list[str] = []
    with _CheckpointBetweenRunLineAndIndex(root) as disk:
        store = FsRuntimeStore(root, **_SMALL)  # type: ignore[arg-type]
        async with Runtime(runtime_id="rt-p", display_name="P", store=store) as rt:
            await rt.create_worker(worker_id="w")
            try:
                for i in range(3):
                    runs.append((await rt.send_input("w", f"in-{i}", input_id=f"k{i}")).run_id)
                    await _run_ends_or_power_goes(rt, disk, runs[-1])
                    if i == 1:  # the next checkpoint is taken as the last run's reply goes in, before its end
                        store._wait_checkpoint()
                        disk.armed = True
            except WorkerRuntimeError:
                pass
        assert disk.index_synced.is_set() and disk.off
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(root, **_SMALL)) as rt:  # type: ignore[arg-type]
        assert [(await rt.get_run("w", run_id)).status for run_id in runs] == ["completed"] * 3


async def test_a_power_cut_while_a_big_groups_files_are_behind_the_log_keeps_every_run_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run ends of a start-up's big group are acknowledged with their log lines only (their Workers' files
    # come later): a checkpoint taken meanwhile must not go past them, so recovery after a power cut replays them.
    root = tmp_path / "db"
    hold = Hold()
    profiles = {"hold": ProfileConfig("hold")}
    runs: dict[str, str] = {}
    async with Runtime(store=FsRuntimeStore(root), profiles=profiles, engines={"hold": hold.engine()}) as rt:
        for n in range(5):
            await rt.create_worker(worker_id=f"w{n}", profile={"kind": "named", "name": "hold"})
            runs[f"w{n}"] = (await rt.send_input(f"w{n}", "work")).run_id
        crashed = crash_copy(root, tmp_path / "crashed")
        hold.release.set()
    monkeypatch.setattr(store_module, "_PROJECT_INLINE", 2)
    with PowerLoss(crashed) as disk:
        store = FsRuntimeStore(crashed, checkpoint_every=2)
        monkeypatch.setattr(store, "_start_catch_up", lambda: None)  # the files stay behind until the cut
        async with Runtime(store=store, profiles=profiles, engines={"hold": Hold().engine()}) as rt:
            assert store._stale
            await rt.create_worker(worker_id="x")
            await rt.create_worker(worker_id="y")  # a checkpoint after these
            store._wait_checkpoint()
            disk.cut()
    disk.power_cut()
    async with Runtime(store=FsRuntimeStore(crashed), profiles=profiles, engines={"hold": Hold().engine()}) as rt:
        for wid, run_id in runs.items():
            assert (await rt.get_run(wid, run_id)).status == "interrupted"
            kinds = [e.kind for e in (await rt.read_events(worker_id=wid)).events]
            assert kinds.count("run_interrupted") == 1
        assert (await rt.get_worker("y")).status == "idle"
