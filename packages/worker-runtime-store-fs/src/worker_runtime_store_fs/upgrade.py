"""Upgrade of a format version 1 store (log lines without a checksum) to version 2, in place and crash-safe.

Every log (the event log's segments, each Worker's transcript and runs) is rewritten beside itself as
``.<name>.v2`` files: the data with checksummed lines, the index with the same keys and the new end offsets. The
phases follow each other, each made durable (one `sync`) before the next starts: all new files written; every data
file renamed over its old one; every index renamed over its old one. The caller bumps runtime.json last. A crash
anywhere leaves each log either as it was (version 1 lines: done again from the start) or with new data and its
new index waiting beside it (renamed on the next start), and runtime.json says 1 until every log is done.
"""

from __future__ import annotations

import os
from pathlib import Path

from worker_runtime_core import is_valid_id

from . import _fileops as fileops
from .layout import Layout
from .logs import _REC, frame, unframe

__all__ = ["upgrade_v1"]


def upgrade_v1(layout: Layout, *, durable: bool) -> int:
    """Rewrite the logs of a version 1 store with checksummed lines; the number of logs rewritten."""
    data_renames: list[tuple[Path, Path]] = []
    index_renames: list[tuple[Path, Path]] = []
    for data, index in _logs(layout):
        new_data, new_index = _beside(data), _beside(index)
        try:
            blob = data.read_bytes()
        except FileNotFoundError:
            continue
        if _is_v2(blob):  # renamed by an upgrade cut short; its new index (if any) waits beside it
            fileops.unlink(new_data)
            if new_index.exists():
                index_renames.append((new_index, index))
            continue
        lines, ends = _convert(blob)
        _write(new_data, lines)
        data_renames.append((new_data, data))
        try:
            old = index.read_bytes()
        except FileNotFoundError:  # recovery rebuilds a missing index
            fileops.unlink(new_index)
            continue
        _write(new_index, _move(old, ends))
        index_renames.append((new_index, index))
    if durable:
        fileops.sync()
    for new, path in data_renames:
        fileops.replace(new, path)
    if durable and data_renames:
        fileops.sync()
    for new, path in index_renames:
        fileops.replace(new, path)
    if durable and index_renames:
        fileops.sync()
    return len(data_renames)


def _logs(layout: Layout) -> list[tuple[Path, Path]]:
    logs = [layout.segment(first) for first in layout.segments()]
    if layout.workers.is_dir():
        for entry in sorted(os.scandir(layout.workers), key=lambda e: e.name):
            if entry.is_dir() and is_valid_id(entry.name):
                directory = layout.worker_dir(entry.name)
                logs.append((directory / "transcript.jsonl", directory / "transcript.idx"))
                logs.append((directory / "runs.jsonl", directory / "runs.idx"))
    return logs


def _beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.v2")


def _is_v2(blob: bytes) -> bool:
    """The first line is checksummed (a version 1 line ends in ``}``, never in a tab and 8 hex digits)."""
    end = blob.find(b"\n")
    return end >= 0 and unframe(blob[: end + 1]) is not None


def _convert(blob: bytes) -> tuple[bytes, dict[int, int]]:
    """Every whole line framed, a torn tail kept as it is (recovery cuts and reports it); old to new line ends."""
    *whole, tail = blob.split(b"\n")
    out = bytearray()
    ends = {0: 0}
    old = 0
    for line in whole:
        out += frame(line)
        old += len(line) + 1
        ends[old] = len(out)
    out += tail
    return bytes(out), ends


def _move(index: bytes, ends: dict[int, int]) -> bytes:
    """The index records with their end offsets moved; from the first that ends inside a line, none (recovery
    indexes those lines again)."""
    out = bytearray()
    for key, end in _REC.iter_unpack(index[: len(index) - len(index) % _REC.size]):
        moved = ends.get(end)
        if moved is None:
            break
        out += _REC.pack(key, moved)
    return bytes(out)


def _write(path: Path, data: bytes) -> None:
    fd = fileops.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        fileops.write(fd, data)
    finally:
        fileops.close(fd)
