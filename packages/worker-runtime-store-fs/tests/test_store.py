"""FsRuntimeStore through the Runtime: restart, crash recovery, damage, ownership, write failures."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
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
    StoreCorruptError,
    WorkerNotFoundError,
    times,
)
from worker_runtime_core.errors import WorkerRuntimeError
from worker_runtime_core.records import RunRecord
from worker_runtime_core.stores.base import Batch
from worker_runtime_store_fs import FsRuntimeStore, StoreFormatError, StoreLockedError, StoreUnwritableError
from worker_runtime_store_fs import _fileops as fileops
from worker_runtime_store_fs import store as store_module
from worker_runtime_store_fs.layout import Layout
from worker_runtime_store_fs.logs import frame


async def _run(rt: Runtime, wid: str, text: str, input_id: str | None = None) -> str:
    ack = await rt.send_input(wid, text, input_id=input_id)
    await rt.wait_for_run(wid, ack.run_id)
    return ack.run_id


async def test_everything_survives_a_clean_restart(tmp_path: Path) -> None:
    async with Runtime(runtime_id="rt-1", display_name="One", store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="a", display_name="Alpha", workspace_refs=[{"name": "r", "reference": "x"}])
        await rt.create_worker(worker_id="b")
        run_id = await _run(rt, "a", "hello", input_id="in-1")
        await _run(rt, "a", "again")
        await rt.stop_worker("b")
        detail_a = await rt.get_worker("a")
        detail_b = await rt.get_worker("b")
        events = (await rt.read_events()).events
        transcript = await rt.transcript("a")
        run = await rt.get_run("a", run_id)
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert rt.runtime_id == "rt-1" and rt.display_name == "One"
        assert await rt.get_worker("a") == detail_a
        assert await rt.get_worker("b") == detail_b
        assert await rt.transcript("a") == transcript
        assert await rt.get_run("a", run_id) == run
        after = (await rt.read_events()).events
        assert after[: len(events)] == events
        assert [e.kind for e in after[len(events) :]] == ["runtime_stopping", "runtime_started"]
        assert [e.id for e in after] == list(range(1, len(after) + 1))
        duplicate = await rt.send_input("a", "hello", input_id="in-1")  # the key survived the restart
        assert duplicate.duplicate and duplicate.run_id == run_id
        summary = await rt.summary()
        assert (summary.workers.idle, summary.workers.stopped) == (1, 1) and summary.usage.runs == 2
        assert summary.store.kind == "fs" and summary.store.path == str(tmp_path.absolute())


async def test_a_crash_mid_run_leaves_it_interrupted_once_and_the_worker_idle(tmp_path: Path) -> None:
    hold = Hold()
    root = tmp_path / "live"
    async with Runtime(
        store=FsRuntimeStore(root), profiles={"hold": ProfileConfig("hold")}, engines={"hold": hold.engine()}
    ) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "hold"})
        ack = await rt.send_input("w", "work", input_id="k")
        await hold.started.wait()
        copy = crash_copy(root, tmp_path / "crashed")
        hold.release.set()
    async with Runtime(
        store=FsRuntimeStore(copy), profiles={"hold": ProfileConfig("hold")}, engines={"hold": Hold().engine()}
    ) as rt:
        worker = await rt.get_worker("w")
        assert worker.status == "idle" and worker.active_run is None
        run = await rt.get_run("w", ack.run_id)
        assert run.status == "interrupted"
        kinds = [e.kind for e in (await rt.read_events(worker_id="w")).events]
        assert kinds.count("run_interrupted") == 1
        assert [e.content for e in (await rt.transcript("w")).items] == ["work"]
        assert (await rt.send_input("w", "work", input_id="k")).duplicate
    async with Runtime(store=FsRuntimeStore(copy)) as rt:  # a second restart interrupts nothing again
        kinds = [e.kind for e in (await rt.read_events(worker_id="w")).events]
        assert kinds.count("run_interrupted") == 1


async def test_start_up_logs_runtime_started_then_the_interrupted_runs_committed_together(tmp_path: Path) -> None:
    hold = Hold()
    root = tmp_path / "live"
    profiles = {"hold": ProfileConfig("hold")}
    async with Runtime(store=FsRuntimeStore(root), profiles=profiles, engines={"hold": hold.engine()}) as rt:
        for n in range(5):
            await rt.create_worker(worker_id=f"w{n}", profile={"kind": "named", "name": "hold"})
            await rt.send_input(f"w{n}", "work")
        last = (await rt.read_events()).next_after
        copy = crash_copy(root, tmp_path / "crashed")
        hold.release.set()
    store = FsRuntimeStore(copy)
    groups: list[int] = []
    commit = store._commit

    def counting_commit(group: list[Any]) -> None:
        groups.append(len(group))
        commit(group)

    store._commit = counting_commit  # type: ignore[method-assign]
    async with Runtime(store=store, profiles=profiles, engines={"hold": Hold().engine()}) as rt:
        started = groups.copy()
        events = (await rt.read_events(after=last)).events
    assert [e.kind for e in events] == ["runtime_started"] + ["run_interrupted"] * 5
    assert sorted(e.worker_ref.worker_id for e in events[1:] if e.worker_ref) == [f"w{n}" for n in range(5)]
    assert started[0] == 1 and sum(started[1:]) == 5 and len(started) <= 3  # not one awaited write per run


class _CountingStore(FsRuntimeStore):
    """Counts the batches of each `write` and `write_many`; `refuse_many` makes `write_many` refuse them all."""

    def __init__(self, root: Path, refuse_many: bool = False) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, int]] = []
        self.refuse_many = refuse_many

    async def write(self, batch: Batch) -> None:
        self.calls.append(("write", 1))
        await super().write(batch)

    async def write_many(self, batches: Sequence[Batch]) -> list[WorkerRuntimeError | None]:
        self.calls.append(("write_many", len(batches)))
        if self.refuse_many:
            raise RuntimeUnavailableError("refused on purpose")
        return await super().write_many(batches)


async def test_start_up_writes_the_interrupted_runs_with_one_write_many(tmp_path: Path) -> None:
    copy, runs = await _interrupted_runs(tmp_path, 5)
    store = _CountingStore(copy)
    async with Runtime(store=store, profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        assert store.calls == [("write", 1), ("write_many", 5)]  # runtime_started, then every run end at once
        for wid, run_id in runs.items():
            assert (await rt.get_run(wid, run_id)).status == "interrupted"
            assert (await rt.get_worker(wid)).status == "idle"
        await rt.create_worker(worker_id="next", profile={"kind": "named", "name": "hold"})
    async with Runtime(store=FsRuntimeStore(copy), profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        events = (await rt.read_events(after=0, limit=1000)).events
        kinds = [e.kind for e in events]
        assert kinds.count("run_interrupted") == 5 and "worker_created" in kinds
        assert [e.id for e in events] == list(range(events[0].id, events[0].id + len(events)))  # no gap


async def test_start_up_whose_run_ends_are_refused_reports_them_and_the_next_start_interrupts_them(
    tmp_path: Path,
) -> None:
    copy, runs = await _interrupted_runs(tmp_path, 3)
    store = _CountingStore(copy, refuse_many=True)
    async with Runtime(store=store, profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        assert store.calls == [("write", 1), ("write_many", 3)]
        unrecorded = [d for d in await rt.diagnostics() if d.code == "run_end_not_recorded"]
        assert sorted(d.worker_ref.worker_id for d in unrecorded if d.worker_ref) == sorted(runs)
        await rt.create_worker(worker_id="next", profile={"kind": "named", "name": "hold"})  # ids resynchronised
    async with Runtime(store=FsRuntimeStore(copy), profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        for wid, run_id in runs.items():
            assert (await rt.get_run(wid, run_id)).status == "interrupted"
        events = (await rt.read_events(after=0, limit=1000)).events
        assert [e.kind for e in events].count("run_interrupted") == 3
        assert [e.id for e in events] == list(range(events[0].id, events[0].id + len(events)))


async def _interrupted_runs(tmp_path: Path, workers: int) -> tuple[Path, dict[str, str]]:
    """A crash copy of a store whose `workers` Workers each have a run in flight, and their run ids."""
    hold = Hold()
    root = tmp_path / "live"
    runs: dict[str, str] = {}
    async with Runtime(store=FsRuntimeStore(root), profiles=_HOLD, engines={"hold": hold.engine()}) as rt:
        for n in range(workers):
            await rt.create_worker(worker_id=f"w{n}", profile={"kind": "named", "name": "hold"})
            runs[f"w{n}"] = (await rt.send_input(f"w{n}", "work")).run_id
        copy = crash_copy(root, tmp_path / "crashed")
        hold.release.set()
    return copy, runs


_HOLD = {"hold": ProfileConfig("hold")}


async def test_the_run_ends_of_a_big_start_up_group_are_served_and_recovered_before_their_files_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group bigger than the inline limit is acknowledged once its log lines are durable; the Workers' files come
    # after. Here the catch-up thread never runs: reads bring a Worker up to date, and a crash meanwhile loses
    # nothing (recovery replays the log lines the files miss).
    copy, runs = await _interrupted_runs(tmp_path, 5)
    monkeypatch.setattr(store_module, "_PROJECT_INLINE", 2)
    store = FsRuntimeStore(copy)
    monkeypatch.setattr(store, "_start_catch_up", lambda: None)
    async with Runtime(store=store, profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        written = [wid for wid in runs if (copy / "workers" / wid / "runs.jsonl").exists()]
        assert len(written) <= 2  # a group of up to 2 (the first one, alone) is projected inline
        assert rt.store_health == "ok"  # behind on purpose, not failing
        crashed = crash_copy(copy, tmp_path / "crashed-again")
        for wid, run_id in runs.items():
            assert (await rt.get_run(wid, run_id)).status == "interrupted"
            kinds = [e.kind for e in (await rt.read_events(worker_id=wid)).events]
            assert kinds.count("run_interrupted") == 1
        assert [wid for wid in runs if (copy / "workers" / wid / "runs.jsonl").exists()] == list(runs)
    for root in (copy, crashed):
        async with Runtime(store=FsRuntimeStore(root), profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
            for wid, run_id in runs.items():
                assert (await rt.get_run(wid, run_id)).status == "interrupted"
                kinds = [e.kind for e in (await rt.read_events(worker_id=wid)).events]
                assert kinds.count("run_interrupted") == 1
            assert [d for d in await rt.diagnostics() if d.level == "error"] == []


async def test_the_catch_up_thread_writes_the_files_a_big_group_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy, runs = await _interrupted_runs(tmp_path, 5)
    monkeypatch.setattr(store_module, "_PROJECT_INLINE", 2)
    store = FsRuntimeStore(copy)
    async with Runtime(store=store, profiles=_HOLD, engines={"hold": Hold().engine()}) as rt:
        thread = store._catch_up_thread  # None once it has finished already
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)
        assert store._stale == {} and rt.store_health == "ok"
        assert [wid for wid in runs if (copy / "workers" / wid / "runs.jsonl").exists()] == list(runs)


def _clock_ahead(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every module of the packages that reads the clock through `times.now` sees it `seconds` ahead."""
    real = times.now
    for module in list(sys.modules.values()):
        if module.__name__.startswith("worker_runtime_") and getattr(module, "now", None) is real:
            monkeypatch.setattr(module, "now", lambda: real() + seconds)


async def test_idempotency_ttl_set_only_on_the_runtimes_limits_keeps_keys_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = Limits(idempotency_ttl_s=3 * 86_400)  # above the one day a store used to keep keys by default
    async with Runtime(store=FsRuntimeStore(tmp_path), limits=limits) as rt:
        await rt.create_worker(worker_id="w")
        first = await rt.send_input("w", "hello", input_id="in-1")
        await rt.wait_for_run("w", first.run_id)
    _clock_ahead(monkeypatch, 2 * 86_400)
    async with Runtime(store=FsRuntimeStore(tmp_path), limits=limits) as rt:
        again = await rt.send_input("w", "hello", input_id="in-1")
    assert again.duplicate and again.run_id == first.run_id


async def test_a_torn_log_tail_is_cut_and_reported(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live")) as rt:
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "kept")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    segment = next((copy / "events").glob("*.jsonl"))
    with open(segment, "ab") as f:
        f.write(b'{"event":{"id":99,"kind":"input_acc')  # the crash hit mid-line
    transcript = copy / "workers" / "w" / "transcript.jsonl"
    with open(transcript, "ab") as f:
        f.write(b'{"sequence":2,"ro')
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        torn = [d for d in await rt.diagnostics() if d.code == "torn_tail_repaired"]
        assert {Path(d.path or "").name for d in torn} == {segment.name, "transcript.jsonl"}
        assert all(d.level == "warning" and d.offset is not None for d in torn)
        assert [e.content for e in (await rt.transcript("w")).items] == ["kept", "kept"]
        ids = [e.id for e in (await rt.read_events()).events]
        assert ids == list(range(1, len(ids) + 1))
        await _run(rt, "w", "more")
        assert (await rt.transcript("w")).total_items == 4


async def test_a_crash_between_log_and_projections_is_replayed(tmp_path: Path) -> None:
    """Projections written after the last checkpoint are redone from the log: delete them to prove it."""
    store = FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        for n in range(3):
            await _run(rt, "w", f"m{n}")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    workers = copy / "workers" / "w"
    for name in ("transcript.jsonl", "transcript.idx", "runs.jsonl", "runs.idx", "state.json"):
        (workers / name).unlink(missing_ok=True)
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert [e.content for e in (await rt.transcript("w")).items] == ["m0", "m0", "m1", "m1", "m2", "m2"]
        assert (await rt.get_worker("w")).usage.runs == 3


async def test_a_deleted_index_is_rebuilt(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
        for n in range(3):
            await _run(rt, "w", f"m{n}")
        run_id = await _run(rt, "w", "last")
        expected = await rt.transcript("w")
        expected_events = await rt.read_events(worker_id="w")
    (tmp_path / "workers" / "w" / "transcript.idx").unlink()
    (tmp_path / "workers" / "w" / "runs.idx").unlink()
    (tmp_path / "index" / "w.idx").unlink()
    next((tmp_path / "events").glob("*.idx")).unlink()
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert await rt.transcript("w") == expected
        assert (await rt.get_run("w", run_id)).status == "completed"
        events = await rt.read_events(worker_id="w")
        assert events.events[: len(expected_events.events)] == expected_events.events
        assert {d.code for d in await rt.diagnostics()} == {"index_rebuilt"}


async def test_a_corrupt_record_affects_only_its_worker(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="bad")
        await rt.create_worker(worker_id="good")
    state = tmp_path / "workers" / "bad" / "state.json"
    state.write_bytes(b"{not json")
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        with pytest.raises(StoreCorruptError) as info:
            await rt.get_worker("bad")
        assert info.value.details == {"path": str(state), "offset": 0}
        with pytest.raises(StoreCorruptError):
            await rt.send_input("bad", "hi")
        await _run(rt, "good", "fine")
        [diag] = [d for d in await rt.diagnostics() if d.code == "store_corrupt"]
        assert diag.level == "error" and diag.path == str(state) and diag.worker_ref is not None


async def test_a_corrupt_transcript_line_in_the_middle_answers_store_corrupt(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
        await rt.create_worker(worker_id="other")
        for n in range(3):
            await _run(rt, "w", f"m{n}")
    transcript = tmp_path / "workers" / "w" / "transcript.jsonl"
    data = bytearray(transcript.read_bytes())
    second = data.index(b"\n") + 1
    data[second : second + 5] = b"#####"  # same length: the index stays right, the line is garbage
    transcript.write_bytes(bytes(data))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert (await rt.transcript("w", limit=1)).items[0].content == "m0"
        with pytest.raises(StoreCorruptError) as info:
            await rt.transcript("w")
        assert info.value.details == {"path": str(transcript), "offset": second}
        with pytest.raises(StoreCorruptError):
            await rt.get_worker("w")
        assert (await rt.get_worker("other")).status == "idle"
        assert any(d.code == "store_corrupt" and d.offset == second for d in await rt.diagnostics())


def _change_letter(path: Path, old: bytes, new: bytes) -> int:
    """Replace the first `old` in the file with `new` (same length); the offset of the line that held it."""
    data = path.read_bytes()
    at = data.index(old)
    path.write_bytes(data[:at] + new + data[at + len(new) :])
    return data.rfind(b"\n", 0, at) + 1


async def test_one_changed_letter_in_a_transcript_entry_is_store_corrupt_with_path_offset_and_diagnostic(
    tmp_path: Path,
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
        await rt.create_worker(worker_id="other")
        for n in range(3):
            await _run(rt, "w", f"message {n}")
        await _run(rt, "other", "message 1")
    transcript = tmp_path / "workers" / "w" / "transcript.jsonl"
    line = _change_letter(transcript, b'"message 1"', b'"massage 1"')  # still valid JSON of the same length
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [e.content for e in (await rt.transcript("w", limit=2)).items] == ["message 0", "message 0"]
        with pytest.raises(StoreCorruptError) as info:
            await rt.transcript("w", start=2)
        assert info.value.details == {"path": str(transcript), "offset": line}
        [diag] = [d for d in await rt.diagnostics() if d.code == "store_corrupt"]
        assert (diag.path, diag.offset, diag.level) == (str(transcript), line, "error")
        assert "checksum" in diag.message
        assert [e.content for e in (await rt.transcript("other")).items] == ["message 1", "message 1"]


async def test_a_checkpoint_writes_no_state_file_for_a_new_worker_unchanged_since_its_worker_file(
    tmp_path: Path,
) -> None:
    # A burst of creates leaves the next checkpoint one Worker's state per new Worker; worker.json holds it.
    async with Runtime(store=FsRuntimeStore(tmp_path, checkpoint_every=2)) as rt:
        for n in range(5):
            await rt.create_worker(worker_id=f"new-{n}")
        await rt.create_worker(worker_id="changed")
        await _run(rt, "changed", "hello")
        before = [await rt.get_worker(wid) for wid in ("new-0", "new-4", "changed")]
    workers = tmp_path / "workers"
    assert not any((workers / f"new-{n}" / "state.json").exists() for n in range(5))
    assert (workers / "changed" / "state.json").exists()
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [await rt.get_worker(wid) for wid in ("new-0", "new-4", "changed")] == before
        assert await rt.diagnostics() == []


async def test_a_checkpoint_that_syncs_the_disk_once_lists_no_worker_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint after a burst of creates makes their files durable with one sync: listing each Worker's paths
    # (for 10,000 Workers, 80,000 of them) would only hold the interpreter while the commits wait.
    per_worker = len(store_module.worker_files(Layout(tmp_path), "w"))
    monkeypatch.setattr(store_module, "_SYNC_ALL_AT", 3 * per_worker)  # three Workers' files: one sync
    synced: list[int] = []
    listed: list[str] = []
    monkeypatch.setattr(fileops, "sync", lambda: synced.append(1))
    real_files = store_module.worker_files
    monkeypatch.setattr(store_module, "worker_files", lambda layout, wid: listed.append(wid) or real_files(layout, wid))
    store = FsRuntimeStore(tmp_path, checkpoint_every=4)  # runtime_started and three creates
    async with Runtime(store=store) as rt:
        for n in range(3):
            await rt.create_worker(worker_id=f"new-{n}")
        store._wait_checkpoint()
        assert (synced, listed) == ([1], [])
        await rt.create_worker(worker_id="one-more")  # a checkpoint of fewer files fsyncs each: it lists them
        await rt.create_worker(worker_id="last")
        await rt.stop_worker("one-more")
        await rt.stop_worker("last")
        store._wait_checkpoint()
        assert synced == [1] and sorted(listed) == ["last", "one-more"]


async def test_a_transcript_line_with_a_good_checksum_but_no_entry_in_it_is_store_corrupt_naming_its_line(
    tmp_path: Path,
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
        for n in range(2):
            await _run(rt, "w", f"message {n}")
    transcript = tmp_path / "workers" / "w" / "transcript.jsonl"
    lines = transcript.read_bytes().splitlines(keepends=True)
    size = len(lines[2]) - 10  # the payload of the third entry, replaced by JSON of the same length
    lines[2] = frame(b'{"x":"' + b"a" * (size - 8) + b'"}')
    transcript.write_bytes(b"".join(lines))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [e.content for e in (await rt.transcript("w", limit=2)).items] == ["message 0", "message 0"]
        with pytest.raises(StoreCorruptError) as info:
            await rt.transcript("w")
        offset = len(lines[0]) + len(lines[1])
        assert info.value.details == {"path": str(transcript), "offset": offset}
        [diag] = [d for d in await rt.diagnostics() if d.code == "store_corrupt"]
        assert diag.offset == offset and "unreadable" in diag.message


async def test_one_changed_letter_in_an_event_line_is_store_corrupt_and_a_diagnostic_after_each_restart(
    tmp_path: Path,
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:  # a graceful stop: the checkpoint covers the log
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "hello there")
        await _run(rt, "w", "second")
        total = len((await rt.read_events()).events)
    segment = next((tmp_path / "events").glob("*.jsonl"))
    line = _change_letter(segment, b'"second"', b'"sekond"')
    for _ in range(2):
        async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
            assert not await rt.diagnostics()  # start-up does not read the log the checkpoint covers
            before = await rt.read_events(limit=3)  # the events before the damaged line are served
            assert [e.id for e in before.events] == [1, 2, 3]
            for worker_id in (None, "w"):
                for _ in range(2):
                    with pytest.raises(StoreCorruptError) as info:
                        await rt.read_events(limit=total, worker_id=worker_id)
                    assert info.value.details == {"path": str(segment), "offset": line}
            [diag] = await rt.diagnostics()  # once, however often the line is read
            assert (diag.code, diag.level, diag.path, diag.offset) == ("store_corrupt", "error", str(segment), line)


async def test_a_second_process_cannot_open_the_store(tmp_path: Path) -> None:
    script = (
        "import anyio, sys\n"
        "from worker_runtime_core import Runtime\n"
        "from worker_runtime_store_fs import FsRuntimeStore, StoreLockedError\n"
        "async def main():\n"
        "    try:\n"
        "        async with Runtime(store=FsRuntimeStore(sys.argv[1])): pass\n"
        "    except StoreLockedError as exc:\n"
        "        print(exc); sys.exit(3)\n"
        "anyio.run(main)\n"
    )
    async with Runtime(store=FsRuntimeStore(tmp_path)):
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 3, done.stderr
        assert str(tmp_path / "LOCK") in done.stdout and f"pid {os.getpid()}" in done.stdout
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr  # released at close


async def test_the_same_process_cannot_open_it_twice(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)):
        with pytest.raises(StoreLockedError):
            async with Runtime(store=FsRuntimeStore(tmp_path)):
                pass


async def test_another_runtime_id_or_a_newer_format_is_refused_naming_the_path(tmp_path: Path) -> None:
    async with Runtime(runtime_id="rt-1", store=FsRuntimeStore(tmp_path)):
        pass
    record = tmp_path / "runtime.json"
    with pytest.raises(StoreFormatError, match=str(record)) as info:
        async with Runtime(runtime_id="rt-2", store=FsRuntimeStore(tmp_path)):
            pass
    assert isinstance(info.value, ConfigError) and "rt-1" in info.value.message
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(StoreFormatError, match="format version 99"):
        async with Runtime(store=FsRuntimeStore(tmp_path)):
            pass
    record.write_text("{")
    with pytest.raises(StoreFormatError, match="unreadable"):
        async with Runtime(store=FsRuntimeStore(tmp_path)):
            pass


def _refuse_new_files(monkeypatch: pytest.MonkeyPatch, directory: Path, code: int) -> list[int]:
    """Make `os.open` refuse to create a file in `directory` (as a read-only mount does, which root's chmod
    cannot imitate) with `code`; returns the flags of every refused call."""
    real_open = os.open
    refused: list[int] = []

    def open_(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        target = Path(path)
        if flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)) and directory in (target, target.parent):
            refused.append(flags)
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    return refused


@pytest.mark.parametrize("name", ["events", "workers", "index"])
async def test_a_directory_it_cannot_write_in_is_refused_at_open_naming_it(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "LOCK"}
    refused = _refuse_new_files(monkeypatch, tmp_path / name, errno.EROFS)
    with pytest.raises(StoreUnwritableError) as info:
        async with Runtime(store=FsRuntimeStore(tmp_path)):
            pass
    assert refused
    assert isinstance(info.value, ConfigError)
    assert info.value.details == {"path": str(tmp_path / name)}
    assert info.value.message == f"cannot write in {tmp_path / name}: Read-only file system"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "LOCK"} == before
    monkeypatch.undo()
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:  # the lock was released; nothing was lost
        assert (await rt.get_worker("w")).status == "idle"


async def test_a_recovery_that_cannot_write_its_repairs_is_refused_at_open_naming_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live")) as rt:
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "kept")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")  # replayed at open
    for name in ("transcript.jsonl", "transcript.idx"):  # a crash before they were written: replay writes them
        (Layout(copy).worker_dir("w") / name).unlink()

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileops, "write", full)
    with pytest.raises(ConfigError) as info:
        async with Runtime(store=FsRuntimeStore(copy)):
            pass
    assert info.value.message == f"cannot open the store at {copy}: No space left on device"
    assert info.value.details == {"path": str(copy)}
    monkeypatch.undo()
    async with Runtime(store=FsRuntimeStore(copy)) as rt:  # the lock was released; space is back: it opens
        assert [e.content for e in (await rt.transcript("w")).items] == ["kept", "kept"]


def _checkpointed(root: Path) -> int:
    return int(json.loads(Layout(root).checkpoint.read_bytes())["event_id"])


async def test_a_short_replay_at_open_leaves_the_checkpoint_to_the_next_one_which_comes_that_much_sooner(
    tmp_path: Path,
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "kept")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    before = _checkpointed(copy)
    store = FsRuntimeStore(copy, checkpoint_every=10)
    async with Runtime(store=store) as rt:
        replayed = store.committed_id - before - 1  # all but runtime_started, written since the open
        assert 0 < replayed < 10
        assert _checkpointed(copy) == before  # nothing written at open for a replay this short
        for i in range(10 - replayed - 2):
            await rt.create_worker(worker_id=f"x{i}")
        store._wait_checkpoint()
        assert _checkpointed(copy) == before  # the replayed lines count towards the next checkpoint ...
        await rt.create_worker(worker_id="last")
        store._wait_checkpoint()
        assert _checkpointed(copy) == store.committed_id  # ... which comes after 10 lines in all
        assert [e.content for e in (await rt.transcript("w")).items] == ["kept", "kept"]


async def test_a_replay_as_long_as_checkpoint_every_is_checkpointed_at_open(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        for i in range(5):
            await rt.create_worker(worker_id=f"w{i}")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    before = _checkpointed(copy)
    async with Runtime(store=FsRuntimeStore(copy, checkpoint_every=5)) as rt:
        assert _checkpointed(copy) == before + 6  # runtime_started and the 5 creates
        assert [w.worker_ref.worker_id for w in (await rt.list_workers()).workers] == [f"w{i}" for i in range(5)]


async def test_where_unnamed_files_are_not_supported_the_write_check_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    tmpfile = getattr(os, "O_TMPFILE", 0)
    named: list[str] = []

    def open_(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if tmpfile and flags & tmpfile == tmpfile:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        if ".write-probe-" in str(path):
            named.append(str(path))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
    assert sorted(Path(p).parent.name for p in named) == ["events", "index", "workers"]
    assert not [p for p in tmp_path.rglob("*") if ".write-probe-" in p.name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
async def test_a_failing_disk_fails_the_call_acknowledges_nothing_and_reads_go_on(
    tmp_path: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = FsRuntimeStore(tmp_path)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "before")
        before = await rt.get_worker("w")
        good_write = store._os_write

        def failing(fd: int, data: bytes) -> None:
            raise OSError(code, os.strerror(code))

        store._os_write = failing
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.send_input("w", "lost")
        assert str(tmp_path) not in info.value.message  # the path and the OS error go to the log
        assert os.strerror(code) in caplog.text
        with pytest.raises(RuntimeUnavailableError):
            await rt.create_worker(worker_id="v")
        assert await rt.get_worker("w") == before  # reads keep working
        assert [e.content for e in (await rt.transcript("w")).items] == ["before", "before"]
        with pytest.raises(WorkerNotFoundError):
            await rt.get_worker("v")
        store._os_write = good_write  # space came back
        await _run(rt, "w", "after")
        ids = [e.id for e in (await rt.read_events()).events]
        assert ids == list(range(1, len(ids) + 1))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [e.content for e in (await rt.transcript("w")).items] == ["before", "before", "after", "after"]


async def test_path_traversal_ids_never_touch_files_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        for bad in ["../escape", "..", "a/../../b", "/etc/passwd", ".hidden", "x\x00y"]:
            with pytest.raises(Exception):  # noqa: B017  # each is a typed invalid-id error; none writes a file
                await rt.create_worker(worker_id=bad)
            with pytest.raises(Exception):  # noqa: B017
                await rt.transcript(bad)
    outside = {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}
    assert outside == set()
    assert sorted(p.name for p in (root / "workers").iterdir()) == []


async def test_retention_drops_whole_old_segments(tmp_path: Path) -> None:
    store = FsRuntimeStore(tmp_path, segment_bytes=2_000, checkpoint_every=5)
    async with Runtime(store=store, limits=Limits(event_retention=10)) as rt:
        for n in range(60):
            await rt.create_worker(worker_id=f"w{n}")
        with pytest.raises(CursorExpiredError) as info:
            await rt.read_events(after=0)
        oldest = info.value.details["oldest_id"]
        page = await rt.read_events(after=oldest - 1, limit=1000)
        assert page.events[0].id == oldest and page.events[-1].id == 61 and len(page.events) >= 10
    assert len(list((tmp_path / "events").glob("*.jsonl"))) < 10


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
async def test_every_fsync_policy_keeps_what_a_process_crash_would(tmp_path: Path, policy: str) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", fsync=policy, fsync_interval_ms=5)) as rt:  # type: ignore[arg-type]
        assert (await rt.summary()).store.fsync == policy
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "hi")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert (await rt.transcript("w")).total_items == 2


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="fsync"):
        FsRuntimeStore("x", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FsRuntimeStore("x", checkpoint_every=0)


@pytest.mark.parametrize(
    "other", ["run-\u00b2", "run-1\u00b2", "run-\u0663", "run-0{n}", "run-", "run-+{n}", "run-9" + "9" * 30]
)
async def test_read_run_of_an_id_not_in_the_runtime_form_is_none(tmp_path: Path, other: str) -> None:
    store = FsRuntimeStore(tmp_path)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        run_id = await _run(rt, "w", "hi")
        assert (await store.read_run("w", run_id)) is not None
        assert (await store.read_run("w", other.format(n=run_id.removeprefix("run-")))) is None


async def test_input_is_acknowledged_while_a_checkpoint_is_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold every state.json replacement (a checkpoint writes them) until released. A checkpoint written under
    # the commit lock (before: all live keys and an os.sync) held every acknowledgement meanwhile.
    entered, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def held_replace(src: str, dst: str) -> None:
        if Path(dst).name == "state.json" and not release.is_set():
            entered.set()
            release.wait(10)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held_replace)
    store = FsRuntimeStore(tmp_path, checkpoint_every=40)
    async with Runtime(store=store) as rt:
        try:
            with anyio.fail_after(5):  # a guard against a hang, not a measure
                await rt.create_worker(worker_id="w")
                while not entered.is_set():
                    await _run(rt, "w", "before")
                run_id = await _run(rt, "w", "during", input_id="during")  # the checkpoint is still held
                assert not store._job.done.is_set()  # type: ignore[union-attr]
        finally:
            release.set()
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        again = await rt.send_input("w", "during", input_id="during")
        assert again.duplicate and again.run_id == run_id


def _block_checkpoint_write(store: FsRuntimeStore, name: str) -> tuple[threading.Event, threading.Event]:
    """Make the checkpoint's first write to a file called `name` stop half-way until released (a crash there)."""
    entered, release = threading.Event(), threading.Event()
    real = store._checkpoint_write

    def write(fd: int, data: bytes) -> None:
        if not entered.is_set() and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == name:
            real(fd, data[: len(data) // 2])
            entered.set()
            release.wait(10)
            raise OSError(errno.EIO, "killed mid-write")
        real(fd, data)

    store._checkpoint_write = write  # type: ignore[method-assign]
    return entered, release


@pytest.mark.parametrize("name", [".state.json.tmp", "input_keys.jsonl", ".input_keys.jsonl.tmp"])
async def test_a_crash_mid_checkpoint_keeps_every_input_key(tmp_path: Path, name: str) -> None:
    # The checkpoint appends new keys to input_keys.jsonl and rewrites it whole after a delete; a crash in the
    # middle of a state write, an append or a rewrite must leave every acknowledged key known after a restart.
    live = tmp_path / "live"
    store = FsRuntimeStore(live, checkpoint_every=1_000_000)
    acks: dict[tuple[str, str, str], str] = {}  # (worker, input id, text): run id
    async with Runtime(store=store) as rt:

        async def send(wid: str, text: str, input_id: str) -> None:
            acks[wid, input_id, text] = await _run(rt, wid, text, input_id=input_id)

        await rt.create_worker(worker_id="a")
        await rt.create_worker(worker_id="b")
        for n in range(3):
            await send("a", f"a{n}", f"k{n}")
            await send("b", f"b{n}", f"k{n}")
        store.checkpoint_every = 1
        await _run(rt, "a", "flush")  # a first checkpoint (keys appended), with nothing blocked
        store._wait_checkpoint()
        store.checkpoint_every = 1_000_000
        if name == ".input_keys.jsonl.tmp":  # a delete makes the next checkpoint rewrite the key file
            await rt.stop_worker("b")
            await rt.delete_worker("b")
            acks = {k: v for k, v in acks.items() if k[0] != "b"}
            await rt.create_worker(worker_id="b")
            await send("b", "new b", "k0")
        await send("a", "a9", "k9")
        entered, release = _block_checkpoint_write(store, name)
        store.checkpoint_every = 1
        try:
            with anyio.fail_after(5):
                acks["a", "last", "last"] = (await rt.send_input("a", "last", input_id="last")).run_id
            assert await anyio.to_thread.run_sync(entered.wait, 10), "the checkpoint never wrote that file"
            copy = crash_copy(live, tmp_path / "crashed")
        finally:
            release.set()
            store.checkpoint_every = 1_000_000
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        for (wid, input_id, text), run_id in acks.items():
            again = await rt.send_input(wid, text, input_id=input_id)
            assert again.duplicate and again.run_id == run_id, (wid, input_id)
        if name == ".input_keys.jsonl.tmp":  # the first b's other keys went with it
            fresh = await rt.send_input("b", "b1", input_id="k1")
            assert not fresh.duplicate
        assert [d for d in await rt.diagnostics() if d.level == "error"] == []


async def test_keys_of_a_deleted_worker_do_not_come_back_after_checkpoints(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path, checkpoint_every=3)) as rt:
        await rt.create_worker(worker_id="w")
        first = await _run(rt, "w", "one", input_id="k")
        await rt.stop_worker("w")
        await rt.delete_worker("w")
        await rt.create_worker(worker_id="w")
        for n in range(5):  # more checkpoints after the delete
            await _run(rt, "w", f"m{n}")
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        ack = await rt.send_input("w", "one", input_id="k")
        assert not ack.duplicate and ack.run_id != first


# --- when the disk fails: refused writes resume by themselves, an unknown outcome waits for a restart -------------

SEGMENT = "[0-9]*.jsonl"  # the event log's data files


async def _event_ids(rt: Runtime) -> list[int]:
    return [e.id for e in (await rt.read_events(limit=1000)).events]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT])
async def test_a_refused_log_append_resumes_with_the_next_write_and_ids_stay_continuous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = FsRuntimeStore(tmp_path)
    disk = DiskFaults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        committed = store.committed_id
        disk.refuse(SEGMENT, code)
        for _ in range(3):  # every try while the disk refuses: a plain 503, nothing of it kept
            with pytest.raises(RuntimeUnavailableError) as info:
                await rt.send_input("w", "lost")
            assert "outcome" not in info.value.details
            assert store.committed_id == committed
            assert rt.store_health == "cannot_write"
        disk.clear()  # space came back: no restart
        ack = await rt.send_input("w", "kept")
        assert ack.event_id == committed + 1
        assert rt.store_health == "ok"
        await rt.wait_for_run("w", ack.run_id)
        assert await _event_ids(rt) == list(range(1, store.committed_id + 1))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [e.content for e in (await rt.transcript("w")).items] == ["kept", "kept"]
        assert await _event_ids(rt) == list(range(1, store.committed_id + 2))  # + runtime_started


async def _page_through(rt: Runtime, wid: str, limit: int) -> list[str]:
    """Every entry by pages, checking each page against `total_items` (a client pages until next_start is None)."""
    contents: list[str] = []
    start: int | None = 0
    while start is not None:
        page = await rt.transcript(wid, start=start, limit=limit)
        assert len(page.items) == min(limit, page.total_items - start), (start, page)
        contents += [e.content for e in page.items]
        start = page.next_start
        assert len(contents) <= page.total_items
    return contents


async def test_a_refused_transcript_write_keeps_readers_right_and_later_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log line is durable, the transcript file is not updated: the input stands (the log is authoritative),
    # readers get it from the log, and the files catch up once the disk allows. No restart.
    store = FsRuntimeStore(tmp_path, checkpoint_every=2)
    disk = DiskFaults(store, monkeypatch)
    with anyio.fail_after(30):  # bounded: a store that cannot record a run's end would keep its waiter forever
        async with Runtime(store=store) as rt:
            await rt.create_worker(worker_id="w")
            await rt.create_worker(worker_id="v")
            await _run(rt, "w", "m0")
            disk.refuse("transcript.jsonl")
            run_id = await _run(rt, "w", "m1")  # acknowledged: its log line is durable
            assert disk.hits and rt.store_health == "cannot_write"
            assert await _page_through(rt, "w", 1) == ["m0", "m0", "m1", "m1"]
            assert await _page_through(rt, "w", 3) == ["m0", "m0", "m1", "m1"]
            assert (await rt.get_run("w", run_id)).status == "completed"
            kinds = [e.kind for e in (await rt.read_events(worker_id="w", limit=100)).events]
            assert kinds.count("run_completed") == 2
            await _run(rt, "v", "other")  # other Workers go on; checkpoints never pass what w's files miss
            store._wait_checkpoint()
            disk.clear()
            await _run(rt, "w", "m2")  # the next write of w brings its files up to date
            assert rt.store_health == "ok"
            assert await _page_through(rt, "w", 2) == ["m0", "m0", "m1", "m1", "m2", "m2"]
            copy = crash_copy(tmp_path, tmp_path.parent / f"{tmp_path.name}-crashed")
    for root in (tmp_path, copy):  # a clean restart, and a crash
        async with Runtime(store=FsRuntimeStore(root)) as rt:
            assert await _page_through(rt, "w", 4) == ["m0", "m0", "m1", "m1", "m2", "m2"]
            assert (await rt.get_run("w", run_id)).status == "completed"
            assert [d for d in await rt.diagnostics() if d.level == "error"] == []


@pytest.mark.parametrize("name", ["runs.jsonl", "runs.idx", "w.idx"])
async def test_a_refused_runs_write_never_loses_the_run_across_checkpoints_and_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    store = FsRuntimeStore(tmp_path, checkpoint_every=1)  # a checkpoint after every write
    disk = DiskFaults(store, monkeypatch)
    with anyio.fail_after(30):  # bounded: a store that cannot record a run's end would keep its waiter forever
        async with Runtime(store=store) as rt:
            await rt.create_worker(worker_id="w")
            disk.refuse(name)
            run_id = await _run(rt, "w", "m")
            for _ in range(3):
                await rt.create_worker(worker_id=f"other{_}")
                store._wait_checkpoint()
            assert (await rt.get_run("w", run_id)).status == "completed"  # served from the log meanwhile
            copy = crash_copy(tmp_path, tmp_path.parent / f"{tmp_path.name}-crashed")
            disk.clear()
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert (await rt.get_run("w", run_id)).status == "completed"
        events = (await rt.read_events(worker_id="w", limit=100)).events
        assert [e.kind for e in events].count("run_completed") == 1


async def test_a_refused_create_is_503_and_the_worker_never_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FsRuntimeStore(tmp_path)
    disk = DiskFaults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        committed = store.committed_id
        disk.refuse("worker.json")  # its log line goes in, its record cannot be written
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.create_worker(worker_id="v")
        assert disk.hits and "outcome" not in info.value.details
        assert store.committed_id == committed and rt.store_health == "cannot_write"
        with pytest.raises(WorkerNotFoundError):
            await rt.get_worker("v")
        assert not (tmp_path / "workers" / "v").exists()
        copy = crash_copy(tmp_path, tmp_path.parent / f"{tmp_path.name}-crashed")
        disk.clear()
        await rt.create_worker(worker_id="u")
        assert rt.store_health == "ok"
        assert await _event_ids(rt) == list(range(1, committed + 2))
    for root in (tmp_path, copy):
        async with Runtime(store=FsRuntimeStore(root)) as rt:
            with pytest.raises(WorkerNotFoundError):
                await rt.get_worker("v")
            kinds = [e.kind for e in (await rt.read_events(worker_id="v")).events]
            assert kinds == []
            assert "v" not in [w.worker_ref.worker_id for w in (await rt.list_workers()).workers]


async def test_a_failed_fsync_leaves_the_outcome_unknown_until_reopened_and_reuses_no_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FsRuntimeStore(tmp_path)
    disk = DiskFaults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        await _run(rt, "w", "before")
        confirmed = store.committed_id
        served = await _event_ids(rt)
        disk.fail_fsync(SEGMENT)
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.send_input("w", "unknown", input_id="in-unknown")
        assert info.value.details == {"outcome": "unknown"}
        assert rt.store_health == "outcome_unknown"
        assert store.committed_id > confirmed  # its id may be on disk: never handed out again
        disk.clear()  # the disk looks fine again: writes stay refused until a restart
        for attempt in (
            lambda: rt.send_input("w", "later"),
            lambda: rt.create_worker(worker_id="v"),
            lambda: rt.send_input("w", "unknown", input_id="in-unknown"),
        ):
            with pytest.raises(RuntimeUnavailableError) as info:
                await attempt()
            assert info.value.details == {"outcome": "unknown"}
        assert rt.store_health == "outcome_unknown"
        assert await _event_ids(rt) == served  # reads go on, and show nothing unconfirmed
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert rt.store_health == "ok"
        events = (await rt.read_events(limit=1000)).events
        ids = [e.id for e in events]
        assert ids[: len(served)] == served and ids == sorted(set(ids))
        unknown = [e for e in events if e.id == confirmed + 1]
        assert len(unknown) <= 1  # present once or absent
        retry = await rt.send_input("w", "unknown", input_id="in-unknown")  # the one safe retry
        if unknown:
            assert retry.duplicate and retry.event_id == confirmed + 1
            assert (await rt.get_run("w", retry.run_id)).status == "interrupted"
        else:
            await rt.wait_for_run("w", retry.run_id)
        assert retry.event_id > confirmed
        ack = await rt.send_input("w", "after")
        assert ack.event_id > max(ids)


@pytest.mark.parametrize("fault", ["write", "fsync"])
async def test_an_eio_while_a_run_ends_leaves_it_one_terminal_status_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    hold = Hold()
    store = FsRuntimeStore(tmp_path)
    disk = DiskFaults(store, monkeypatch)
    profiles = {"hold": ProfileConfig("hold")}
    async with Runtime(store=store, profiles=profiles, engines={"hold": hold.engine()}) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "hold"})
        ack = await rt.send_input("w", "work")  # acknowledged
        await hold.started.wait()
        if fault == "write":
            disk.refuse(SEGMENT, errno.EIO)
        else:
            disk.fail_fsync(SEGMENT)
        hold.release.set()
        await disk.settled()
        assert rt.store_health == "outcome_unknown"
        assert (await rt.get_run("w", ack.run_id)).status == "running"  # its end is not confirmed
        disk.clear()
    async with Runtime(store=FsRuntimeStore(tmp_path), profiles=profiles, engines={"hold": Hold().engine()}) as rt:
        run = await rt.get_run("w", ack.run_id)
        events = (await rt.read_events(worker_id="w", limit=100)).events
        terminal = [e.kind for e in events if e.kind.startswith("run_") and e.run_id == ack.run_id]
        assert len(terminal) == 1
        assert run.status == ("interrupted" if fault == "write" else terminal[0].removeprefix("run_"))
        assert (await rt.get_worker("w")).status == "idle"


async def test_a_failed_checkpoint_fsync_leaves_the_outcome_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A later fsync of the same files could succeed although what this one covered was lost; the checkpoint would
    # then say it is on disk. So the store stops writing, and a restart replays the log from the last checkpoint.
    store = FsRuntimeStore(tmp_path, checkpoint_every=1_000_000)
    disk = DiskFaults(store, monkeypatch)
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        run_id = await _run(rt, "w", "m0")
        disk.fail_fsync("transcript.jsonl")  # the event log's fsyncs still succeed
        store.checkpoint_every = 1
        await rt.create_worker(worker_id="v")  # hands a checkpoint over; its fsync of w's transcript fails
        store._wait_checkpoint()
        store.checkpoint_every = 1_000_000
        outcomes = []
        for n in range(2):  # the first write after it collects the failed checkpoint (and stands)
            try:
                await rt.create_worker(worker_id=f"u{n}")
                outcomes.append("ok")
            except RuntimeUnavailableError as exc:
                outcomes.append(exc.details.get("outcome", "refused"))
        assert disk.hits and outcomes[-1] == "unknown" and rt.store_health == "outcome_unknown"
        disk.clear()
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert rt.store_health == "ok"
        assert [e.content for e in (await rt.transcript("w")).items] == ["m0", "m0"]
        assert (await rt.get_run("w", run_id)).status == "completed"
        await rt.create_worker(worker_id="after")


class _Chatty(Engine):
    """Answers with as many entries as the input's number."""

    name = "chatty"

    async def run(self, ctx: RunContext) -> None:
        for n in range(int(ctx.content)):
            await ctx.emit(f"{ctx.content}.{n}")


async def test_a_run_s_entries_are_paged_by_its_record_across_a_restart_and_a_crash(tmp_path: Path) -> None:
    hold = Hold()
    root = tmp_path / "live"
    profiles = {"chatty": ProfileConfig("chatty"), "hold": ProfileConfig("hold")}
    engines: dict[str, type[Engine]] = {"chatty": _Chatty, "hold": hold.engine()}
    async with Runtime(store=FsRuntimeStore(root), profiles=profiles, engines=engines) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "chatty"})
        await rt.create_worker(worker_id="h", profile={"kind": "named", "name": "hold"})
        first = await _run(rt, "w", "3")  # sequences 0-3
        second = await _run(rt, "w", "2")  # 4-6
        held = (await rt.send_input("h", "work")).run_id
        await hold.started.wait()
        copy = crash_copy(root, tmp_path / "crashed")
        hold.release.set()
    engines["hold"] = Hold().engine()
    for _ in range(2):  # the crash's recovery, then a clean restart of what it left
        store = FsRuntimeStore(copy)
        async with Runtime(store=store, profiles=profiles, engines=engines) as rt:
            for run_id, sequences in ((first, [0, 1, 2, 3]), (second, [4, 5, 6])):
                recorded = await store.read_run("w", run_id)
                assert recorded is not None and recorded.entries == len(sequences)
                page = await rt.transcript("w", run_id=run_id, limit=2)
                assert page.total_items == len(sequences)
                assert [e.sequence for e in page.items] == sequences[:2]
                assert page.next_start == sequences[2]
            interrupted = await rt.transcript("h", run_id=held)
            assert [e.content for e in interrupted.items] == ["work"] and interrupted.total_items == 1
            assert (await rt.get_run("h", held)).status == "interrupted"
            third = await _run(rt, "w", "1")
            assert [e.content for e in (await rt.transcript("w", run_id=third)).items] == ["1", "1.0"]


def test_a_run_line_written_before_runs_counted_their_entries_still_decodes() -> None:
    line = b'{"run_id":"run-3","input_sequence":0,"started_at":1.0,"status":"completed","ended_at":2.0}'
    run = msgspec.json.decode(line, type=RunRecord)
    assert (run.run_id, run.entries) == ("run-3", None)


# --- queued inputs: the content in its input_accepted line only, kept by checkpoints while queued ---------------


class _Talk:
    """An engine whose run emits `outputs` entries once `go` is set, then holds until `release`."""

    def __init__(self, outputs: int = 0) -> None:
        self.outputs = outputs
        self.go = anyio.Event()
        self.emitted = anyio.Event()
        self.release = anyio.Event()

    def engine(self) -> type[Engine]:
        talk = self

        class TalkEngine(Engine):
            name = "talk"

            async def run(self, ctx: RunContext) -> None:
                if ctx.content.startswith("queued"):
                    await ctx.emit(f"did {ctx.content[:10]}")
                    return
                await talk.go.wait()
                for n in range(talk.outputs):
                    await ctx.emit(f"out {n}")
                talk.emitted.set()
                await talk.release.wait()

        return TalkEngine


def _talk_runtime(store: FsRuntimeStore, talk: _Talk, **options: Any) -> Runtime:
    return Runtime(
        runtime_id="rt-q",
        store=store,
        profiles={"talk": ProfileConfig("talk")},
        engines={"talk": talk.engine()},
        **options,
    )


def _checkpoint(store: FsRuntimeStore) -> None:
    """A checkpoint now, in a worker thread, holding the commit lock as a commit that triggers one does."""
    with store._io:
        store._checkpoint_now()


def _holding(root: Path, text: str) -> list[str]:
    """The files under `root` that hold `text`, relative to it."""
    needle = text.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


async def test_a_queued_input_s_content_is_written_once_not_with_every_later_write_of_its_worker(
    tmp_path: Path,
) -> None:
    secret = "queued " + "s3cr3t" * 200
    talk = _Talk(outputs=5)
    store = FsRuntimeStore(tmp_path, checkpoint_every=10_000)
    async with _talk_runtime(store, talk) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "talk"})
        await rt.send_input("w", "first")
        queued = await rt.send_input("w", secret, on_busy="enqueue")
        await rt.send_input("w", "queued too", on_busy="enqueue")  # one more write of the queue
        talk.go.set()
        await talk.emitted.wait()  # five output entries, each a write of the busy Worker's state
        segment = [p for p in (tmp_path / "events").glob("*.jsonl")]
        data = b"".join(p.read_bytes() for p in segment)
        assert data.count(secret.encode()) == 1  # its input_accepted line only
        assert _holding(tmp_path, secret) == [str(segment[0].relative_to(tmp_path))]
        accepted = json.loads(next(line for line in data.splitlines() if secret.encode() in line).split(b"\t")[0])
        assert (accepted["event"]["kind"], accepted["event"]["run_id"]) == ("input_accepted", queued.run_id)
        assert accepted["event"]["data"] == {"input_sequence": None, "input_id": None, "kind": "user", "queued": True}
        talk.release.set()
        assert (await rt.wait_for_run("w", queued.run_id)).status == "completed"
        entry = (await rt.transcript("w", run_id=queued.run_id)).items[0]
        assert (entry.role, entry.content) == ("user", secret)


async def test_a_checkpoint_keeps_queued_content_when_retention_drops_the_log_segment_that_held_it(
    tmp_path: Path,
) -> None:
    secret = "queued " + "k3pt" * 100
    talk = _Talk(outputs=20)
    store = FsRuntimeStore(tmp_path, checkpoint_every=10_000, segment_bytes=600)
    async with _talk_runtime(store, talk, limits=Limits(event_retention=2)) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "talk"})
        await rt.send_input("w", "first")
        queued = await rt.send_input("w", secret, on_busy="enqueue", input_id="k")
        talk.go.set()
        await talk.emitted.wait()
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert _holding(tmp_path, secret) == ["workers/w/queued.json"]  # its log line is gone with its segment
        assert json.loads((tmp_path / "workers" / "w" / "queued.json").read_bytes()) == {queued.run_id: secret}
    talk = _Talk()
    async with _talk_runtime(FsRuntimeStore(tmp_path), talk) as rt:  # it starts after the restart
        assert (await rt.wait_for_run("w", queued.run_id)).status == "completed"
        assert (await rt.transcript("w", run_id=queued.run_id)).items[0].content == secret
        await anyio.to_thread.run_sync(_checkpoint, rt._store)  # type: ignore[arg-type]
        assert not (tmp_path / "workers" / "w" / "queued.json").exists()  # it started: nothing is queued


async def test_queued_content_goes_from_disk_when_its_run_is_cancelled_and_with_a_deleted_worker(
    tmp_path: Path,
) -> None:
    talk = _Talk()
    store = FsRuntimeStore(tmp_path, checkpoint_every=10_000)
    queued_json = tmp_path / "workers" / "w" / "queued.json"
    async with _talk_runtime(store, talk) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "talk"})
        await rt.send_input("w", "first")
        cancelled = await rt.send_input("w", "queued to cancel", on_busy="enqueue")
        kept = await rt.send_input("w", "queued and kept", on_busy="enqueue")
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert json.loads(queued_json.read_bytes()) == {
            cancelled.run_id: "queued to cancel",
            kept.run_id: "queued and kept",
        }
        await rt.cancel_worker("w", run_id=cancelled.run_id)
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert json.loads(queued_json.read_bytes()) == {kept.run_id: "queued and kept"}
        await rt.stop_worker("w")  # cancels the active run and the queued one
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert not queued_json.exists()
        await rt.delete_worker("w")
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert not (tmp_path / "workers" / "w").exists()
        assert _holding(tmp_path / "workers", "queued and kept") == []


async def test_a_deleted_worker_s_queued_content_goes_with_it_even_before_a_checkpoint_wrote_it_away(
    tmp_path: Path,
) -> None:
    talk = _Talk()
    store = FsRuntimeStore(tmp_path, checkpoint_every=10_000)
    async with _talk_runtime(store, talk) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "talk"})
        await rt.send_input("w", "first")
        await rt.send_input("w", "queued then deleted", on_busy="enqueue")
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert (tmp_path / "workers" / "w" / "queued.json").exists()
        await rt.stop_worker("w")
        await rt.delete_worker("w")  # no checkpoint between the stop and the delete
        await anyio.to_thread.run_sync(_checkpoint, store)
        assert not (tmp_path / "workers" / "w").exists()
    async with _talk_runtime(FsRuntimeStore(tmp_path), talk) as rt:
        with pytest.raises(WorkerNotFoundError):
            await rt.get_worker("w")


async def test_a_queued_run_whose_content_the_store_lost_ends_failed_and_is_never_run_empty(tmp_path: Path) -> None:
    talk = _Talk(outputs=20)
    store = FsRuntimeStore(tmp_path, checkpoint_every=10_000, segment_bytes=600)
    async with _talk_runtime(store, talk, limits=Limits(event_retention=2)) as rt:
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "talk"})
        await rt.send_input("w", "first")
        lost = await rt.send_input("w", "queued and lost", on_busy="enqueue")
        kept = await rt.send_input("w", "queued and kept", on_busy="enqueue")
        talk.go.set()
        await talk.emitted.wait()
        await anyio.to_thread.run_sync(_checkpoint, store)  # the log lines that held them are dropped
    queued_json = tmp_path / "workers" / "w" / "queued.json"
    contents = json.loads(queued_json.read_bytes())
    del contents[lost.run_id]
    queued_json.write_bytes(json.dumps(contents).encode())
    async with _talk_runtime(FsRuntimeStore(tmp_path), _Talk()) as rt:
        run = await rt.wait_for_run("w", lost.run_id)
        assert run.status == "failed" and run.error is not None and run.error.code == "store_corrupt"
        assert run.input_sequence is None
        assert (await rt.wait_for_run("w", kept.run_id)).status == "completed"  # the next one still runs
        assert [e.content for e in (await rt.transcript("w")).items if e.role == "user"] == ["first", "queued and kept"]
        missing = [d for d in await rt.diagnostics() if d.code == "store_corrupt" and d.path is not None]
        assert [(d.level, d.path) for d in missing] == [("error", str(queued_json))]  # the store's report of it
        assert lost.run_id in missing[0].message
