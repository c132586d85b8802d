"""How long a store-fs checkpoint holds the commit lock (and so every acknowledgement), at 100k and 300k live
input keys, side by side with another checkout of the repository (never a test).

    hatch run dev:python tools/bench_checkpoint.py --baseline /path/to/other/checkout

Each figure comes from a fresh child process that imports the store from one tree (its ``packages/*/src`` first
on ``PYTHONPATH``). The child opens an FsRuntimeStore (fsync ``always``) and commits, through the store's
writer, 1,000 Workers and N events each accepting an input with its key, in groups of 1,000 (as group commit
would); takes a checkpoint; commits 10,000 more such events (the traffic between two checkpoints); then times
the one commit that triggers the next checkpoint: the time the commit lock is held. A plain commit of one event
is timed beside it. Where the checkpoint is written in the background, the time until it is on disk is shown
too. Target: at most 5 ms held at 300k keys.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 1_000
BETWEEN = 10_000  # events between two checkpoints (the default checkpoint_every)


def run_child(root: str, keys: int) -> dict[str, float]:
    import anyio

    from worker_runtime_core import AssistantIntent, RuntimeDefaultProfile
    from worker_runtime_core.records import EventRecord, InputKeyRecord, WorkerRecord
    from worker_runtime_core.stores import Batch
    from worker_runtime_store_fs import FsRuntimeStore
    from worker_runtime_store_fs.store import _Pending

    store = FsRuntimeStore(root, fsync="always", checkpoint_every=10**9)
    anyio.run(store.open, "rt-bench", None)
    clock = time.time()
    workers = {
        f"w{n}": WorkerRecord(
            worker_id=f"w{n}",
            profile="echo",
            intent=AssistantIntent(),
            profile_selector=RuntimeDefaultProfile(),
            created_at=clock,
            updated_at=clock,
        )
        for n in range(WORKERS)
    }
    next_id = store._next_id
    counter = 0

    def pending(kind: str, wid: str, key: bool) -> Any:
        nonlocal next_id, counter
        event = EventRecord(next_id, kind, wid, f"run-{next_id}" if key else None, clock, {})
        record = None
        if key:
            counter += 1
            record = InputKeyRecord(
                worker_id=wid,
                input_id=f"in-{counter}",
                digest=b"0123456789abcdef",
                run_id=f"run-{next_id}",
                input_sequence=counter,
                event_id=next_id,
                created_at=clock,
            )
        worker = workers[wid]
        worker.last_event_id = next_id
        next_id += 1
        return _Pending(Batch(event=event, worker=worker, input_key=record))

    def commit(n: int, *, key: bool = True) -> None:
        names = list(workers)
        for start in range(0, n, 1000):
            group = [pending("input_accepted", names[(start + i) % WORKERS], key) for i in range(min(1000, n - start))]
            store._commit(group)

    def wait() -> float:
        t0 = time.perf_counter()
        if hasattr(store, "_wait_checkpoint"):
            store._wait_checkpoint()
        return time.perf_counter() - t0

    for start in range(0, WORKERS, 1000):
        store._commit([pending("worker_created", f"w{n}", False) for n in range(start, min(WORKERS, start + 1000))])
    commit(keys - BETWEEN)
    store.checkpoint_every = 1
    commit(1, key=False)  # a checkpoint with all keys so far
    wait()
    store.checkpoint_every = 10**9
    commit(BETWEEN)
    plain = []
    for _ in range(20):
        t0 = time.perf_counter()
        commit(1, key=False)
        plain.append(time.perf_counter() - t0)
    store.checkpoint_every = 1
    t0 = time.perf_counter()
    commit(1, key=False)  # this commit triggers the checkpoint: the commit lock is held for this long
    held = time.perf_counter() - t0
    background = wait()
    store.checkpoint_every = 10**9
    anyio.run(store.close)
    return {"held_ms": held * 1000, "plain_ms": statistics.median(plain) * 1000, "background_ms": background * 1000}


def measure(tree: Path, keys: int, tmp: Path) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in sorted((tree / "packages").glob("*/src")))
    root = tempfile.mkdtemp(dir=tmp)
    out = subprocess.run(
        [sys.executable, __file__, "--child", root, str(keys)], env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a git worktree of the commit before)")
    parser.add_argument("--keys", type=int, nargs="*", default=[100_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3, help="children per figure; the median is shown")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], int(args.child[1]))))
        return
    trees = [("this tree", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d}"
    )
    print("| tree | live keys | commit lock held by the checkpoint (ms) | plain commit (ms) | written after (ms) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_name:
        for keys in args.keys:
            for label, tree in trees:
                runs = [measure(tree, keys, Path(tmp_name)) for _ in range(args.repeat)]
                held = statistics.median(r["held_ms"] for r in runs)
                plain = statistics.median(r["plain_ms"] for r in runs)
                after = statistics.median(r["background_ms"] for r in runs)
                print(f"| {label} | {keys:,} | {held:,.1f} | {plain:.2f} | {after:,.0f} |")


if __name__ == "__main__":
    main()
