"""A store of format version 1 (log lines without a checksum) is upgraded in place at open, crash-safely."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from powerloss import PowerLoss

from worker_runtime_core import Limits, Runtime
from worker_runtime_store_fs import FsRuntimeStore, StoreFormatError
from worker_runtime_store_fs import _fileops as fileops
from worker_runtime_store_fs.layout import Layout
from worker_runtime_store_fs.logs import unframe
from worker_runtime_store_fs.upgrade import upgrade_v1

_REC = struct.Struct("<qq")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # these drive the store through many power cuts: one event loop is enough


def _logs(root: Path) -> list[Path]:
    return sorted([*root.glob("events/*.jsonl"), *root.glob("workers/*/*.jsonl")])


def _to_v1(root: Path) -> None:
    """Rewrite a store as version 1 wrote it: ``<json>\\n`` lines, their end offsets in the indexes."""
    for data in _logs(root):
        index = data.with_suffix(".idx")
        lines = data.read_bytes().splitlines(keepends=True)
        keys = [key for key, _ in _REC.iter_unpack(index.read_bytes())]
        assert len(keys) == len(lines)
        out, records = b"", b""
        for key, line in zip(keys, lines, strict=True):
            payload = unframe(line)
            assert payload is not None
            out += payload + b"\n"
            records += _REC.pack(key, len(out))
        data.write_bytes(out)
        index.write_bytes(records)
    record = json.loads((root / "runtime.json").read_bytes())
    record["format_version"] = 1
    (root / "runtime.json").write_text(json.dumps(record))


async def _v1_store(root: Path) -> tuple[str, list[object], list[object]]:
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        await rt.create_worker(worker_id="w")
        for text in ("one", "two"):
            ack = await rt.send_input("w", text)
            await rt.wait_for_run("w", ack.run_id)
        transcript = (await rt.transcript("w")).items
        events = (await rt.read_events()).events
    _to_v1(root)
    assert all(unframe(data.read_bytes().splitlines(keepends=True)[0]) is None for data in _logs(root))
    return ack.run_id, list(transcript), list(events)


async def test_a_version_1_store_is_upgraded_in_place_and_serves_what_it_held(tmp_path: Path) -> None:
    run_id, transcript, events = await _v1_store(tmp_path)
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert (await rt.transcript("w")).items == transcript
        assert (await rt.read_events()).events[: len(events)] == events
        assert (await rt.get_run("w", run_id)).status == "completed"
        [note] = await rt.diagnostics()
        assert (note.level, note.code, note.path) == ("info", "store_upgraded", str(tmp_path / "runtime.json"))
        ack = await rt.send_input("w", "three")
        await rt.wait_for_run("w", ack.run_id)
    assert json.loads((tmp_path / "runtime.json").read_bytes())["format_version"] == 2
    for data in _logs(tmp_path):  # every line of every log is checksummed now
        assert all(unframe(line) is not None for line in data.read_bytes().splitlines(keepends=True))
    assert not list(tmp_path.rglob(".*.v2"))
    async with Runtime(store=FsRuntimeStore(tmp_path)) as rt:
        assert not await rt.diagnostics()  # upgraded once
        assert (await rt.transcript("w")).total_items == 6


class _Crash(Exception):
    pass


async def test_an_upgrade_cut_short_at_any_rename_is_finished_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, transcript, events = await _v1_store(tmp_path / "v1")
    renames = 2 * len(_logs(tmp_path / "v1"))
    real = fileops.replace
    for crash_at in range(renames):
        root = tmp_path / f"crash-{crash_at}"
        shutil.copytree(tmp_path / "v1", root)
        calls = 0

        def replace(src: object, dst: object, crash_at: int = crash_at) -> None:
            nonlocal calls
            if calls == crash_at:
                raise _Crash
            calls += 1
            real(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(fileops, "replace", replace)
        with pytest.raises(_Crash):
            upgrade_v1(Layout(root), durable=False)
        monkeypatch.setattr(fileops, "replace", real)
        assert json.loads((root / "runtime.json").read_bytes())["format_version"] == 1
        async with Runtime(store=FsRuntimeStore(root)) as rt:
            assert (await rt.transcript("w")).items == transcript
            assert (await rt.read_events()).events[: len(events)] == events
            assert (await rt.get_run("w", run_id)).status == "completed"
            assert [d.code for d in await rt.diagnostics()] == ["store_upgraded"]


async def test_a_store_of_format_version_0_is_refused_naming_the_version(tmp_path: Path) -> None:
    async with Runtime(store=FsRuntimeStore(tmp_path)):
        pass
    record = json.loads((tmp_path / "runtime.json").read_bytes())
    record["format_version"] = 0
    (tmp_path / "runtime.json").write_text(json.dumps(record))
    with pytest.raises(StoreFormatError, match="format version 0"):
        async with Runtime(store=FsRuntimeStore(tmp_path)):
            pass


async def _open_until_cut(root: Path, cut: int | None) -> PowerLoss:
    """Open the store (which upgrades it) under the power-loss layer, the power going after `cut` operations of
    any kind (a rename or a sync as well as a write); None counts them."""
    with PowerLoss(root, cut_after_ops=cut if cut is not None else 10**9) as disk:
        store = FsRuntimeStore(root)
        try:
            await store.open(None, None, limits=Limits())
        except Exception:
            pass  # the power went during the open
        try:
            await store.close()
        except Exception:
            pass
    return disk


@pytest.mark.parametrize("metadata_first", [False, True], ids=["nothing-unsynced", "metadata-first"])
async def test_a_power_cut_at_any_operation_of_an_upgrade_loses_nothing(tmp_path: Path, metadata_first: bool) -> None:
    """Under either disk adversary (nothing unsynced survives; or every directory change survives but file data
    only as fsynced), a cut at any operation of the opening upgrade leaves a store that serves what version 1
    held."""
    run_id, transcript, events = await _v1_store(tmp_path / "v1")
    shutil.copytree(tmp_path / "v1", tmp_path / "count")
    ops = (await _open_until_cut(tmp_path / "count", None)).ops
    assert ops > 2 * len(_logs(tmp_path / "v1"))  # the sweep covers every rewritten log and rename
    for cut in range(ops + 1):
        root = tmp_path / f"cut-{cut}"
        shutil.copytree(tmp_path / "v1", root)
        (await _open_until_cut(root, cut)).power_cut(metadata_first=metadata_first)
        async with Runtime(store=FsRuntimeStore(root)) as rt:
            assert (await rt.transcript("w")).items == transcript, cut
            assert (await rt.read_events()).events[: len(events)] == events, cut
            assert (await rt.get_run("w", run_id)).status == "completed", cut
            assert {d.code for d in await rt.diagnostics()} <= {"store_upgraded"}, cut


async def test_a_power_cut_that_keeps_a_later_rename_of_an_upgrade_but_not_an_earlier_one_loses_nothing(
    tmp_path: Path,
) -> None:
    """A disk may write directory changes in any order between two syncs: at a cut at any operation of the
    opening upgrade, each rename not yet made durable is lost in turn while every other directory change
    survives. A log's new index must never be in place over its old data (the upgrade makes the data renames
    durable before the first index rename), so the store serves what version 1 held with nothing to repair."""
    _, transcript, events = await _v1_store(tmp_path / "v1")
    runs = sorted({entry.run_id for entry in transcript if entry.run_id is not None})
    assert len(runs) == 2
    shutil.copytree(tmp_path / "v1", tmp_path / "count")
    ops = (await _open_until_cut(tmp_path / "count", None)).ops
    tried = 0
    for cut in range(ops + 1):
        lost = 0
        while True:
            root = tmp_path / f"cut-{cut}-{lost}"
            shutil.copytree(tmp_path / "v1", root)
            disk = await _open_until_cut(root, cut)
            if lost >= disk.pending_renames:
                break
            disk.power_cut(metadata_first=True, lost_rename=lost)
            tried += 1
            async with Runtime(store=FsRuntimeStore(root)) as rt:
                assert (await rt.transcript("w")).items == transcript, (cut, lost)
                assert (await rt.read_events()).events[: len(events)] == events, (cut, lost)
                for ran in runs:  # every run is found through the runs log's index, not only the newest
                    assert (await rt.get_run("w", ran)).status == "completed", (cut, lost, ran)
                assert {d.code for d in await rt.diagnostics()} <= {"store_upgraded"}, (cut, lost)
            lost += 1
    assert tried >= 2 * len(_logs(tmp_path / "v1"))  # the sweep loses each data rename and each index rename
