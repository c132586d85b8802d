"""Helpers of the FS store tests."""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from worker_runtime_core import Engine, RunContext
from worker_runtime_store_fs import FsRuntimeStore


def crash_copy(root: Path, target: Path) -> Path:
    """What a process crash (SIGKILL) leaves: the files as they are now, with nobody holding the lock.

    A background checkpoint may rename its temporary file while the copy runs: a file gone by the time it is
    copied is left out, as a crash just before it was made (or just after it was renamed) would leave it.
    """

    def copy(src: str, dst: str) -> None:
        try:
            shutil.copy2(src, dst)
        except FileNotFoundError:
            pass

    shutil.copytree(root, target, copy_function=copy)
    return target


class Hold:
    """An engine that starts, then waits until `release` is set (so a run is in flight at a crash)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    def engine(self) -> type[Engine]:
        hold = self

        class HoldEngine(Engine):
            name = "hold"

            async def run(self, ctx: RunContext) -> None:
                hold.started.set()
                await hold.release.wait()
                await ctx.emit("done")

        return HoldEngine


def fd_name(fd: int) -> str:
    """The file name of an open descriptor (Linux)."""
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


class DiskFaults:
    """Real `OSError`s from the disk under an `FsRuntimeStore`, for files whose name matches a pattern.

    `refuse(pattern, errno)` fails the store's writes to those files (the one place its bytes reach a file);
    `fail_fsync(pattern)` fails `os.fsync` of them with EIO. `clear()` ends both (space came back). `hits` counts
    the failures injected; `settled()` waits for the first and for the commit that met it to finish.
    """

    def __init__(self, store: FsRuntimeStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.write_pattern: str | None = None
        self.write_errno = errno.ENOSPC
        self.fsync_pattern: str | None = None
        self.hits = 0
        self.hit = threading.Event()
        good_write = store._os_write
        good_fsync = os.fsync

        def write(fd: int, data: bytes) -> None:
            if self.write_pattern is not None and fnmatch.fnmatch(fd_name(fd), self.write_pattern):
                self.hits += 1
                self.hit.set()
                raise OSError(self.write_errno, os.strerror(self.write_errno))
            good_write(fd, data)

        def fsync(fd: int) -> None:
            if self.fsync_pattern is not None and fnmatch.fnmatch(fd_name(fd), self.fsync_pattern):
                self.hits += 1
                self.hit.set()
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            good_fsync(fd)

        store._os_write = write
        monkeypatch.setattr(os, "fsync", fsync)

    def refuse(self, pattern: str, code: int = errno.ENOSPC) -> None:
        self.write_pattern, self.write_errno = pattern, code

    def fail_fsync(self, pattern: str) -> None:
        self.fsync_pattern = pattern

    def clear(self) -> None:
        self.write_pattern = self.fsync_pattern = None

    async def settled(self) -> None:
        """Wait until a failure was injected and the store's commit that met it has let go of the commit lock."""

        def wait() -> None:
            assert self.hit.wait(10), "no failure was injected"
            with self.store._io:
                pass

        await anyio.to_thread.run_sync(wait)
