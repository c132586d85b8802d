"""Projections: the recently used Workers' files are shared by reader threads and the writer."""

from __future__ import annotations

import gc
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from worker_runtime_store_fs.layout import Layout
from worker_runtime_store_fs.logs import FdCache
from worker_runtime_store_fs.projections import Projections, default_write


class _YieldingDict(OrderedDict[str, Any]):
    """An OrderedDict that gives up the CPU before each move, so that another thread runs inside a lookup."""

    def move_to_end(self, key: str, last: bool = True) -> None:
        os.sched_yield()  # releases the GIL: widens the window between finding a Worker and moving it
        super().move_to_end(key, last)


def test_lru_of_worker_files_survives_concurrent_lookups_and_evictions(tmp_path: Path) -> None:
    # A cache of 2 over 3 Workers: lookups keep evicting, so one thread's lookup that found a Worker meets
    # another thread's eviction of it (the unlocked cache raised KeyError from move_to_end: a reader got a 500,
    # the writer failed a durable line with 503).
    projections = Projections(Layout(tmp_path), FdCache(), default_write, capacity=2)
    projections._files = _YieldingDict()
    ids = ["w0", "w1", "w2"]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def lookups(offset: int) -> None:
        start.wait()
        try:
            for n in range(3_000):
                wid = ids[(n + offset) % len(ids)]
                assert projections.transcript(wid).data.parent.name == wid
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lookups, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(projections._files) <= 2


def test_a_workers_files_are_not_tracked_by_the_garbage_collector(tmp_path: Path) -> None:
    # A store keeps one set of file names per Worker (2,000 made at a start-up with 2,000 Workers): they hold
    # strings only, so a full collection need not scan them.
    projections = Projections(Layout(tmp_path), FdCache(), default_write)
    transcript, runs, index = projections.transcript("w1"), projections.runs("w1"), projections.event_index("w1")
    assert transcript.data_name == str(tmp_path.absolute() / "workers" / "w1" / "transcript.jsonl")
    assert [gc.is_tracked(o) for o in (projections._of("w1"), transcript, runs, index)] == [False] * 4
    assert not gc.is_tracked(projections._of("w1").directory)
