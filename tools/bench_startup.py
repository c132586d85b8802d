"""Start-up of a Runtime over an FS store that holds many runs interrupted by a crash (never a test).

    hatch run bench-startup                            # 2,000 interrupted runs, median of 5 starts
    hatch run bench-startup --quick                    # 500 runs, median of 3
    hatch run bench-startup --baseline /tmp/perf-base  # and another checkout, interleaved, with this / baseline

A store is built with N Workers each running one input (an engine that never answers), copied while the runs
are in flight (what a SIGKILL leaves), and each start times `Runtime.start()` on a fresh copy: recovery, then
`runtime_started`, then the N `run_interrupted` events; the part after the store's `open` (recovery) is shown
apart. Target at 2,000 runs: under 0.3 s (3 s when each interrupted run was one awaited write).
Each round runs in a fresh child process that builds its own store with its tree's code (the trees' formats may
differ); with ``--baseline`` the rounds alternate between the two checkouts (tools/_sidebyside.py) and the table
shows the medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from worker_runtime_core import Engine, Limits, ProfileConfig, RunContext, Runtime
from worker_runtime_store_fs import FsRuntimeStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sidebyside as side


class _Forever(Engine):
    name = "forever"

    async def run(self, ctx: RunContext) -> None:
        await anyio.sleep_forever()


_PROFILES = {"forever": ProfileConfig("forever")}
_ENGINES: dict[str, type[Engine]] = {"forever": _Forever}


async def build(root: Path, crashed: Path, runs: int) -> None:
    rt = Runtime(
        store=FsRuntimeStore(root, fsync="never"),
        limits=Limits(max_workers=runs),
        profiles=_PROFILES,
        engines=_ENGINES,
    )
    await rt.start()
    for n in range(runs):
        wid = f"w{n:05d}"
        await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": "forever"})
        await rt.send_input(wid, "work")
    shutil.copytree(root, crashed)  # the files as a crash leaves them: every run active
    await rt.close()


async def start_once(root: Path, runs: int) -> tuple[float, float]:
    """Seconds of `Runtime.start()`, and of the store's `open` (recovery) within it."""
    store = FsRuntimeStore(root)
    opened = store.open
    spent = [0.0]

    async def timed_open(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await opened(*args, **kwargs)
        finally:
            spent[0] = time.perf_counter() - t0

    store.open = timed_open  # type: ignore[method-assign]
    rt = Runtime(store=store, limits=Limits(max_workers=runs), profiles=_PROFILES, engines=_ENGINES)
    t0 = time.perf_counter()
    await rt.start()
    elapsed = time.perf_counter() - t0
    events = await rt.read_events(worker_id="w00000")
    assert events.events[-1].kind == "run_interrupted", events.events[-1].kind
    await rt.close()
    return elapsed, spent[0]


def measure(runs: int, repeat: int) -> dict[str, float]:
    """Build a crashed store of `runs` interrupted runs, then the medians of `repeat` starts on fresh copies."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        anyio.run(build, tmp / "live", tmp / "crashed", runs)
        samples = []
        for i in range(repeat):
            copy = tmp / f"start-{i}"
            shutil.copytree(tmp / "crashed", copy)
            samples.append(anyio.run(start_once, copy, runs))
    return {
        "total": statistics.median(s[0] for s in samples),
        "after_open": statistics.median(s[0] - s[1] for s in samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 runs, median of 3")
    side.add_arguments(parser, rounds=1)
    parser.add_argument("--child", nargs=2, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), int(args.child[1]))))
        return
    runs, repeat = (500, 3) if args.quick else (2_000, 5)
    forest = side.trees(args.baseline)
    results = {
        "startup": side.interleave(forest, args.rounds, lambda t: side.child(t, __file__, [str(runs), str(repeat)]))
    }
    print(side.machine(" (quick)" if args.quick else ""))
    rows = [
        side.Row(
            f"start-up with {runs:,} interrupted runs, fsync=always, s (median of {repeat})",
            "startup",
            "total",
            "under 0.3 s at 2,000",
            digits=3,
        ),
        side.Row(
            f"of which after the store opened: runtime_started and the {runs:,} run_interrupted, s",
            "startup",
            "after_open",
            "(was one awaited write per run)",
            digits=3,
        ),
    ]
    side.print_table(rows, results, forest)


if __name__ == "__main__":
    main()
