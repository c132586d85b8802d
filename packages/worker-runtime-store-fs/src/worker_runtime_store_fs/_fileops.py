"""Every operation of the store that changes the disk, in one place: plain functions over `os`.

Callers use them as ``fileops.fsync(fd)`` (looked up at call time), so a test can put a layer under the store
that knows what is durable: the power-loss tests replace these functions, and ``tools/audit_fsync.py`` removes
the ``fsync``, ``fsync_dir`` and ``sync`` calls one call site at a time. Reads do not go through here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "OutcomeUnknown",
    "close",
    "fsync",
    "fsync_dir",
    "mkdir",
    "open",
    "replace",
    "rmtree",
    "sync",
    "unlink",
    "write",
]

StrPath = str | Path


class OutcomeUnknown(OSError):
    """A disk operation failed in a way that may or may not have left its data on disk: an fsync that failed (the
    kernel may have dropped the pages it could not write, and a later fsync would not say so), or a failed write
    that could not be cut back. Raised with the errno of the cause."""


def _unknown(exc: OSError, what: str) -> OutcomeUnknown:
    return OutcomeUnknown(exc.errno or 0, f"{what} failed: {exc.strerror or exc}")


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
    """Make a file's data (or, for a directory's descriptor, its entries) durable.

    Raises:
        OutcomeUnknown: the fsync failed; what it covered may or may not be on disk.
    """
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _unknown(exc, "fsync") from exc


def fsync_dir(path: StrPath) -> None:
    """Make the entries of a directory (creates, renames, unlinks in it) durable.

    Raises:
        OutcomeUnknown: the fsync failed (opening the directory failing is a plain OSError: nothing was synced).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _unknown(exc, f"fsync of directory {path}") from exc
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


def mkdir(path: StrPath, *, parents: bool = False) -> None:
    """Create a directory (and with `parents` its missing parents); an existing one is fine."""
    Path(path).mkdir(parents=parents, exist_ok=True)


def rmtree(path: StrPath) -> None:
    """Remove a directory and everything in it; errors are ignored."""
    shutil.rmtree(path, ignore_errors=True)
