"""Every operation of the store that changes the disk, in one place: plain functions over `os`.

Callers use them as ``fileops.fsync(fd)`` (looked up at call time), so a test can put a layer under the store
that knows what is durable: the power-loss tests replace these functions, and ``tools/audit_fsync.py`` removes
the ``fsync``, ``fsync_dir`` and ``sync`` calls one call site at a time. Reads do not go through here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["close", "fsync", "fsync_dir", "mkdir", "open", "replace", "rmtree", "sync", "unlink", "write"]

StrPath = str | Path


def open(path: StrPath, flags: int, mode: int = 0o644) -> int:
    """`os.open` for writing (a file that `O_CREAT` makes is a new directory entry, not durable yet)."""
    return os.open(path, flags, mode)


def close(fd: int) -> None:
    os.close(fd)


def write(fd: int, data: bytes) -> None:
    """Write all of `data` (retrying short writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync(fd: int) -> None:
    """Make a file's data (or, for a directory's descriptor, its entries) durable."""
    os.fsync(fd)


def fsync_dir(path: StrPath) -> None:
    """Make the entries of a directory (creates, renames, unlinks in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync() -> None:
    """Everything written by anyone, to disk (`os.sync`)."""
    os.sync()


def replace(src: StrPath, dst: StrPath) -> None:
    os.replace(src, dst)


def unlink(path: StrPath) -> None:
    """Remove a file; a missing one is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mkdir(path: Path, *, parents: bool = False) -> None:
    """Create a directory (and with `parents` its missing parents); an existing one is fine."""
    path.mkdir(parents=parents, exist_ok=True)


def rmtree(path: StrPath) -> None:
    """Remove a directory and everything in it; errors are ignored."""
    shutil.rmtree(path, ignore_errors=True)
