"""Records: small JSON files replaced atomically (temp file in the same directory, fsync, rename, fsync dir)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import msgspec

from . import _fileops as fileops

__all__ = ["RecordCorrupt", "read_record", "write_atomic"]

T = TypeVar("T")


class RecordCorrupt(Exception):
    """A record or log line cannot be decoded; names the path and byte offset."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path} at byte {offset}: {reason}")


def write_atomic(
    path: Path,
    data: bytes | Iterable[bytes],
    *,
    durable: bool,
    write: Callable[[int, bytes], None] | None = None,
) -> int:
    """Replace `path` with `data` (bytes, or chunks written one after another) so that a reader sees the old or
    the new content, never a mix; returns the number of bytes written.

    With `durable`, the data and the rename are on disk when this returns. `write` writes each chunk
    (`fileops.write` by default; tests inject failures through it).
    """
    put = write or fileops.write
    tmp = path.with_name(f".{path.name}.tmp")
    fd = fileops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    size = 0
    try:
        for chunk in (data,) if isinstance(data, bytes) else data:
            put(fd, chunk)
            size += len(chunk)
        if durable:
            fileops.fsync(fd)
    finally:
        fileops.close(fd)
    fileops.replace(tmp, path)
    if durable:
        fileops.fsync_dir(path.parent)
    return size


def read_record(path: Path, type_: type[T]) -> T | None:
    """Decode a JSON record; None when the file does not exist.

    Raises:
        RecordCorrupt: the file exists but is not a valid record.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordCorrupt(path, 0, str(exc)) from None
