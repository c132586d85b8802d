"""A power-loss layer for the FS store tests: what a disk keeps when the power goes.

`PowerLoss` replaces the functions of `worker_runtime_store_fs._fileops` (every operation of the store that
changes the disk) and keeps a model of what is durable:

* file data: the content a file had at its last `fsync` (a file never fsynced is empty);
* directory entries: the names a directory held at its last `fsync_dir` (a create, rename or unlink not covered
  by one is undone, and a new directory never fsynced is empty).

`sync` makes everything durable. What is on disk when the layer is installed counts as durable. After
`cut_after` writes the power goes: that write and every later operation fail with EIO, as if the process had
died there. `power_cut()` then rewrites the tree under the root to the durable state only, so a store opened on
it sees what a real disk could hold after a power cut (the worst case: nothing that was not made durable).
`resume()` instead lets only the process die there: the machine runs on, so the files stay as they are (the
page cache) and what was durable stays what it was, for a later power cut.

The live files are the real ones (reads see them); fsyncs are not passed to the disk, which keeps the tests fast.
The store writes from several threads (the writer, checkpoints, the catch-up thread): each patched operation holds
one lock over its real call and its model update, so the model never sees a directory another thread is removing.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from worker_runtime_store_fs import _fileops

__all__ = ["PowerLoss"]


class _Node:
    """A file or directory as the disk knows it: `data` (file) or `entries` (directory) as last made durable."""

    __slots__ = ("data", "entries", "is_dir")

    def __init__(self, is_dir: bool, data: bytes = b"") -> None:
        self.is_dir = is_dir
        self.data = data
        self.entries: dict[str, _Node] = {}


F = TypeVar("F", bound=Callable[..., Any])


def _locked(op: F) -> F:
    """Run a patched operation under the layer's lock (a subclass's override waits outside it, then calls super)."""

    @functools.wraps(op)
    def locked(self: PowerLoss, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return op(self, *args, **kwargs)

    return cast(F, locked)


def _read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class PowerLoss:
    """Install with ``with PowerLoss(root, cut_after=n) as disk:``; after leaving it, `power_cut()`."""

    def __init__(self, root: Path, *, cut_after: int | None = None, cut_after_ops: int | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = os.path.abspath(root)
        self.cut_after = cut_after
        self.cut_after_ops = cut_after_ops  # or: cut after that many operations of any kind (renames, syncs, ...)
        self.ops = 0  # operations seen, when counting them
        self.writes = 0  # fileops.write calls seen
        self.fsyncs = 0  # fsync, fsync_dir and sync calls seen
        self.off = False
        self._live: dict[str, _Node] = {}  # path -> the node that is there now
        self._fds: dict[int, _Node] = {}
        # renames no fsync_dir or sync has made durable yet: (src, dst, the node moved, the node it replaced)
        self._renames: list[tuple[str, str, _Node, _Node | None]] = []
        self._patch = pytest.MonkeyPatch()
        self._lock = threading.RLock()
        self._live[self.root] = self._snapshot_tree(self.root)

    # --- the model ---------------------------------------------------------------------------------------------

    def _inside(self, path: object) -> str | None:
        p = os.path.abspath(os.fspath(path))  # type: ignore[call-overload]
        return p if p == self.root or p.startswith(self.root + os.sep) else None

    def _node(self, path: str) -> _Node:
        """The node at a real path, made on first sight (a file the store made without this layer)."""
        node = self._live.get(path)
        if node is None:
            node = self._live[path] = _Node(os.path.isdir(path))
        return node

    def _snapshot_tree(self, path: str) -> _Node:
        """Everything under `path` as durable (install time, `sync`)."""
        node = self._node(path)
        if node.is_dir:
            node.entries = {}
            for name in sorted(os.listdir(path)):
                node.entries[name] = self._snapshot_tree(os.path.join(path, name))
        else:
            node.data = _read_all(path)
        return node

    def cut(self) -> None:
        """The power goes now: every later operation fails (then `power_cut()` leaves what was durable)."""
        self.off = True

    def arm(self, writes: int) -> None:
        """Cut the power after `writes` more writes."""
        self.cut_after = self.writes + writes

    def arm_ops(self, ops: int) -> None:
        """Cut the power after `ops` more operations of any kind (a write, an fsync, a rename, ...)."""
        self.ops = 0
        self.cut_after_ops = ops

    def resume(self) -> None:
        """The process died at the cut but the machine did not: operations work again on the files as they are
        (what the page cache held), and what is durable is still only what was made so."""
        self.off = False
        self.cut_after = self.cut_after_ops = None

    @property
    def pending_renames(self) -> int:
        """How many renames no directory fsync has made durable yet (for `power_cut(lost_rename=...)`)."""
        return len(self._renames)

    def _gate(self) -> None:
        if not self.off and self.cut_after_ops is not None:
            self.ops += 1
            self.off = self.ops > self.cut_after_ops
        if self.off:
            raise OSError(errno.EIO, "the power is off")

    # --- the patched operations --------------------------------------------------------------------------------

    @_locked
    def open(self, path: _fileops.StrPath, flags: int, mode: int = 0o644) -> int:
        self._gate()
        p = self._inside(path)
        existed = p is not None and os.path.lexists(p)
        fd = os.open(path, flags, mode)
        if p is not None:
            if not existed:
                self._live[p] = _Node(False)
            self._fds[fd] = self._node(p)
        return fd

    @_locked
    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        os.close(fd)

    @_locked
    def write(self, fd: int, data: bytes) -> None:
        self._gate()
        self.writes += 1
        if self.cut_after is not None and self.writes > self.cut_after:
            self.off = True
            self._gate()
        _REAL["write"](fd, data)

    @_locked
    def fsync(self, fd: int) -> None:
        self._gate()
        self.fsyncs += 1
        node = self._fds.get(fd)
        if node is not None and not node.is_dir:
            node.data = _read_all(f"/proc/self/fd/{fd}")  # the descriptor is write-only: read the file anew

    @_locked
    def fsync_dir(self, path: _fileops.StrPath) -> None:
        self._gate()
        self.fsyncs += 1
        p = self._inside(path)
        if p is not None:
            node = self._node(p)
            node.entries = {name: self._node(os.path.join(p, name)) for name in sorted(os.listdir(p))}
            self._renames = [r for r in self._renames if p not in (os.path.dirname(r[0]), os.path.dirname(r[1]))]

    @_locked
    def sync(self) -> None:
        self._gate()
        self.fsyncs += 1
        self._snapshot_tree(self.root)
        self._renames = []

    @_locked
    def replace(self, src: _fileops.StrPath, dst: _fileops.StrPath) -> None:
        self._gate()
        os.replace(src, dst)
        s, d = self._inside(src), self._inside(dst)
        if s is not None and d is not None:
            replaced = self._live.get(d)
            moved = self._live[d] = self._live.pop(s, None) or _Node(False)
            self._renames.append((s, d, moved, replaced))

    @_locked
    def unlink(self, path: _fileops.StrPath) -> None:
        self._gate()
        _REAL["unlink"](path)
        p = self._inside(path)
        if p is not None:
            self._live.pop(p, None)

    @_locked
    def mkdir(self, path: Path, *, parents: bool = False) -> None:
        self._gate()
        missing = []
        here = os.path.abspath(path)
        while not os.path.exists(here):
            missing.append(here)
            here = os.path.dirname(here)
        _REAL["mkdir"](path, parents=parents)
        for p in missing:
            if self._inside(p) is not None:
                self._live[p] = _Node(True)

    @_locked
    def rmtree(self, path: _fileops.StrPath) -> None:
        self._gate()
        _REAL["rmtree"](path)
        p = self._inside(path)
        if p is not None:
            for key in [k for k in self._live if k == p or k.startswith(p + os.sep)]:
                del self._live[key]

    # --- installing, and the cut -------------------------------------------------------------------------------

    def __enter__(self) -> PowerLoss:
        for name in _REAL:
            self._patch.setattr(_fileops, name, getattr(self, name))
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()

    def power_cut(self, *, metadata_first: bool = False, lost_rename: int | None = None) -> None:
        """Leave on disk only what was durable (call it once the store is closed or abandoned).

        With `metadata_first` the disk is the other adversary: every directory change reached the disk (a
        journaling file system commits metadata on its own schedule) but file data only as far as it was fsynced,
        so a file renamed into place before its data was made durable is empty or short.

        `lost_rename` (with `metadata_first`) reorders directory changes: every one reached the disk except that
        one of the `pending_renames` (0 the oldest), so a later rename can be on disk while an earlier one is not
        (nothing orders two renames but an fsync between them). It is undone only while nothing has moved its
        names since.
        """
        self.off = True
        if metadata_first:
            undo = self._renames[lost_rename] if lost_rename is not None else None
            if undo is not None and (os.path.lexists(undo[0]) or self._live.get(undo[1]) is not undo[2]):
                undo = None
            for directory, _, files in os.walk(self.root):
                for name in files:
                    path = os.path.join(directory, name)
                    node = self._live.get(path)
                    if undo is not None and path == undo[1]:
                        node = undo[3]
                        if node is None:
                            os.unlink(path)
                            continue
                    with open(path, "wb") as f:
                        f.write(node.data if node is not None else b"")
            if undo is not None:
                with open(undo[0], "wb") as f:
                    f.write(undo[2].data)
            return
        tree = self._live[self.root]
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        self._materialize(self.root, tree)

    def _materialize(self, path: str, node: _Node) -> None:
        for name, child in node.entries.items():
            target = os.path.join(path, name)
            if child.is_dir:
                os.mkdir(target)
                self._materialize(target, child)
            else:
                with open(target, "wb") as f:
                    f.write(child.data)


_REAL = {
    name: getattr(_fileops, name)
    for name in ("open", "close", "write", "fsync", "fsync_dir", "sync", "replace", "unlink", "mkdir", "rmtree")
}
