"""Recovery of the event log: a short index is repaired, missing or changed events are reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest
from store_fs_helpers import crash_copy

from worker_runtime_core import (
    BuiltinProfile,
    IdempotencyConflictError,
    RequestClosedError,
    RequestNotFoundError,
    Runtime,
)
from worker_runtime_store_fs import FsRuntimeStore
from worker_runtime_store_fs import _fileops as fileops


async def _three_segments(root: Path) -> list[int]:
    async with Runtime(store=FsRuntimeStore(root, segment_bytes=700)) as rt:
        await rt.create_worker(worker_id="w")
        for i in range(3):
            await rt.wait_for_run("w", (await rt.send_input("w", f"in-{i}")).run_id)
    segments = sorted(int(p.stem) for p in (root / "events").glob("*.jsonl"))
    assert len(segments) > 2
    return segments


async def test_a_closed_segment_with_a_short_index_is_reindexed_and_reported(tmp_path: Path) -> None:
    segments = await _three_segments(tmp_path)
    async with Runtime(store=FsRuntimeStore(tmp_path, segment_bytes=700)) as rt:
        before = (await rt.read_events(limit=1000)).events
    index = tmp_path / "events" / f"{segments[0]:020d}.idx"
    os.truncate(index, os.path.getsize(index) - 16)  # its last line is no longer indexed
    async with Runtime(store=FsRuntimeStore(tmp_path, segment_bytes=700)) as rt:
        found = [(d.code, d.path) for d in await rt.diagnostics()]
        assert found == [("index_rebuilt", str(tmp_path / "events" / f"{segments[0]:020d}.jsonl"))]
        after = (await rt.read_events(limit=1000)).events
        assert after[: len(before)] == before


async def test_events_missing_between_segments_are_store_corrupt_and_reads_go_on_past_them(tmp_path: Path) -> None:
    segments = await _three_segments(tmp_path)
    data, index = (tmp_path / "events" / f"{segments[0]:020d}{ext}" for ext in (".jsonl", ".idx"))
    ends = [int.from_bytes(index.read_bytes()[i + 8 : i + 16], "little") for i in range(0, index.stat().st_size, 16)]
    os.truncate(data, ends[-3])  # the last two lines of the oldest segment are gone, data and index
    os.truncate(index, (len(ends) - 2) * 16)
    lost_first = segments[0] + len(ends) - 2
    async with Runtime(store=FsRuntimeStore(tmp_path, segment_bytes=700)) as rt:
        [problem] = [d for d in await rt.diagnostics()]
        assert (problem.level, problem.code, problem.path) == ("error", "store_corrupt", str(data))
        assert f"events {lost_first} to {segments[1] - 1}" in problem.message
        page = await rt.read_events(after=lost_first - 1, limit=1)
        assert [e.id for e in page.events] == [segments[1]]  # not [] forever


async def test_an_event_line_changed_after_the_checkpoint_is_store_corrupt_at_start_and_not_replayed(
    tmp_path: Path,
) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        await rt.create_worker(worker_id="w")
        await rt.wait_for_run("w", (await rt.send_input("w", "first")).run_id)
        await rt.wait_for_run("w", (await rt.send_input("w", "second")).run_id)
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")  # the log after the checkpoint is replayed
    segment = next((copy / "events").glob("*.jsonl"))
    data = segment.read_bytes()
    at = data.index(b'"second"')
    segment.write_bytes(data[:at] + b'"sekond"' + data[at + 8 :])
    line = data.rfind(b"\n", 0, at) + 1
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        found = [d for d in await rt.diagnostics() if d.code == "store_corrupt" and d.path == str(segment)]
        assert [(d.level, d.offset) for d in found] == [("error", line)]
        assert "checksum" in found[0].message
        contents = [e.content for e in (await rt.transcript("w")).items]
        assert contents == ["first", "first", "second", "second"]  # the damage is served nowhere


async def test_a_run_line_left_unindexed_by_a_crash_is_indexed_by_its_run_number(tmp_path: Path) -> None:
    """A crash between a run's line in runs.jsonl and its index record leaves the line unindexed; the replay's
    repair must index it under its run number (the runs log's key), or the index's keys stop increasing and the
    binary search of a lookup misses earlier runs."""
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        await rt.create_worker(worker_id="w")
        runs = []
        for i in range(3):
            runs.append((await rt.send_input("w", f"in-{i}")).run_id)
            await rt.wait_for_run("w", runs[-1])
        ended = [e.id for e in (await rt.read_events(limit=1000)).events if e.kind == "run_completed"]
    # The checkpoint is from before the last run's end, which the crash cut between its line and its index record.
    checkpoint = tmp_path / "checkpoint.json"
    record = json.loads(checkpoint.read_bytes())
    checkpoint.write_text(json.dumps({**record, "event_id": ended[-1] - 1}))
    index = tmp_path / "workers" / "w" / "runs.idx"
    os.truncate(index, os.path.getsize(index) - 16)
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert [(await rt.get_run("w", run_id)).status for run_id in runs] == ["completed"] * 3


async def test_a_replayed_create_keeps_the_worker_json_it_finds_and_writes_a_missing_one(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        await rt.create_worker(worker_id="kept", display_name="Kept")
        await rt.create_worker(worker_id="lost", display_name="Lost")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")  # both creates are replayed at open
    kept = copy / "workers" / "kept" / "worker.json"
    inode = kept.stat().st_ino
    (copy / "workers" / "lost" / "worker.json").unlink()  # a crash before the create's files were written
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert kept.stat().st_ino == inode  # not rewritten (a rewrite renames a new file over it)
        assert (copy / "workers" / "lost" / "worker.json").exists()
        assert [(await rt.get_worker(w)).display_name for w in ("kept", "lost")] == ["Kept", "Lost"]
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert [(await rt.get_worker(w)).display_name for w in ("kept", "lost")] == ["Kept", "Lost"]


async def test_a_worker_json_torn_by_a_crash_is_rewritten_from_the_replayed_create(tmp_path: Path) -> None:
    # worker.json is written in place after the create's log line is durable: a crash can leave it empty or cut.
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        await rt.create_worker(worker_id="empty", display_name="Empty")
        await rt.create_worker(worker_id="cut", display_name="Cut")
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")  # both creates are replayed at open
    records = {wid: copy / "workers" / wid / "worker.json" for wid in ("empty", "cut")}
    whole = {wid: path.read_bytes() for wid, path in records.items()}
    records["empty"].write_bytes(b"")
    records["cut"].write_bytes(whole["cut"][:20])
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert [(await rt.get_worker(w)).display_name for w in ("empty", "cut")] == ["Empty", "Cut"]
        found = sorted((d.level, d.code, d.path) for d in await rt.diagnostics())
        assert found == sorted(("warning", "record_repaired", str(path)) for path in records.values())
    assert {wid: path.read_bytes() for wid, path in records.items()} == whole
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        assert await rt.diagnostics() == []
        assert [(await rt.get_worker(w)).display_name for w in ("empty", "cut")] == ["Empty", "Cut"]


async def test_a_create_writes_its_worker_json_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No temp file and rename for a new directory's record: the log line is the create's durable point.
    renamed: list[object] = []
    real_replace = fileops.replace
    monkeypatch.setattr(fileops, "replace", lambda src, dst: renamed.append(dst) or real_replace(src, dst))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        renamed.clear()
        await rt.create_worker(worker_id="w", display_name="W")
        assert renamed == []
        assert sorted(os.listdir(tmp_path / "workers" / "w")) == ["worker.json"]
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert (await rt.get_worker("w")).display_name == "W"


async def test_a_replay_of_a_delete_and_a_re_create_rebuilds_the_new_workers_files(tmp_path: Path) -> None:
    # The replay keeps what it knows of a Worker's files from line to line instead of looking at them for each:
    # a replayed delete removes them, and what the re-create after it writes must be written again.
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=1_000_000)) as rt:
        await rt.create_worker(worker_id="w", display_name="Old")
        await rt.wait_for_run("w", (await rt.send_input("w", "old")).run_id)
        await rt.stop_worker("w")
        await rt.delete_worker("w")
        await rt.create_worker(worker_id="w", display_name="New")
        run_id = (await rt.send_input("w", "new")).run_id
        await rt.wait_for_run("w", run_id)
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")  # all of it is replayed at open
    for _ in range(2):
        async with Runtime(store=FsRuntimeStore(copy)) as rt:
            assert (await rt.get_worker("w")).display_name == "New"
            assert [e.content for e in (await rt.transcript("w")).items] == ["new", "new"]
            assert (await rt.get_run("w", run_id)).status == "completed"
            assert [d for d in await rt.diagnostics() if d.level == "error"] == []


async def _waiting(rt: Runtime, wid: str, run_id: str) -> str:
    """The request id of the run's pending request, once it waits (woken by each durable write)."""
    with anyio.fail_after(10):
        while True:
            signal = rt.event_signal()
            run = await rt.get_run(wid, run_id)
            if run.pending_request is not None:
                return run.pending_request.request_id
            await signal.wait()


@pytest.mark.parametrize("checkpoint_every", [1, 1_000_000], ids=["checkpointed", "replayed"])
async def test_requests_for_input_and_their_answers_survive_a_crash(tmp_path: Path, checkpoint_every: int) -> None:
    """A run that was waiting is interrupted at the restart and its request closed visibly; the answer that closed
    another request keeps its response_id, so a repeat gets the first ack and another answer is refused."""
    ask = BuiltinProfile(name="ask")
    async with Runtime(store=FsRuntimeStore(tmp_path / "live", checkpoint_every=checkpoint_every)) as rt:
        await rt.create_worker(worker_id="done", profile=ask)
        answered = await rt.send_input("done", "ship it")
        done_request = await _waiting(rt, "done", answered.run_id)
        first = await rt.respond("done", answered.run_id, done_request, approved=True, response_id="resp-1")
        await rt.wait_for_run("done", answered.run_id)
        await rt.create_worker(worker_id="open", profile=ask)
        waiting = await rt.send_input("open", "delete it")
        open_request = await _waiting(rt, "open", waiting.run_id)
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    async with Runtime(store=FsRuntimeStore(copy)) as rt:
        run = await rt.get_run("open", waiting.run_id)
        assert (run.status, run.pending_request) == ("interrupted", None)
        events = (await rt.read_events(worker_id="open")).events
        assert [e.kind for e in events[-3:]] == ["input_requested", "input_responded", "run_interrupted"]
        assert events[-2].data == {"request_id": open_request, "outcome": "closed", "approved": None, "content": None}
        assert (await rt.open_requests()).requests == []
        with pytest.raises(RequestClosedError):
            await rt.respond("open", waiting.run_id, open_request, approved=True)
        again = await rt.respond("done", answered.run_id, done_request, approved=True, response_id="resp-1")
        assert again.duplicate and again.event_id == first.event_id
        with pytest.raises(IdempotencyConflictError):
            await rt.respond("done", answered.run_id, done_request, approved=False, response_id="resp-1")
        with pytest.raises(RequestNotFoundError):
            await rt.respond("done", answered.run_id, "req-1", approved=True)
