"""Benchmarks of worker-runtime-store-fs, side by side with their targets (never a test).

    hatch run bench-store-fs                                  # page cost, recovery, group commit
    hatch run bench-store-fs --quick                          # smaller recovery set, for a smoke run
    hatch run bench-store-fs --baseline /tmp/base             # and another checkout, interleaved
    hatch run bench-store-fs --instructions --baseline /tmp/base   # instructions per page read (callgrind)
    hatch run bench-store-fs --only queued --baseline /tmp/base    # an entry write behind a queue of 100 inputs

Page cost: the last 100-entry page of a 1,000,000-entry transcript against that of a 1,000-entry one, read
through the store (median and p99 of 2,000 reads each). Target: ratio at most 1.5.
Recovery: 10,000 workers with 100 transcript entries each (50 inputs answered by echo), made through the Runtime;
then the time from starting a fresh process to serving (median over the rounds). Target: under 2 s.
Group commit: runs/s of 1,000 workers at once, fsync=always against fsync=never, and one worker alone.
Queued inputs: the cost of one output entry write (`ctx.emit`) of a Worker with 100 queued inputs of 64 KiB
against one with none, fsync=always and never, and the log bytes each write adds. Target: about 1x.
Every figure comes from fresh child processes that import the packages from one checkout; each checkout builds
its own data sets (in its own format) once, and with ``--baseline`` the rounds alternate between the two
(tools/_sidebyside.py). Instructions: callgrind's count of one read of the last page of the 1,000,000-entry
transcript, where timing is too noisy to separate 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from worker_runtime_core import Engine, Limits, ProfileConfig, RunContext, Runtime
from worker_runtime_core.records import TranscriptRecord
from worker_runtime_store_fs import FsRuntimeStore
from worker_runtime_store_fs import logs as _logs
from worker_runtime_store_fs.logs import FdCache
from worker_runtime_store_fs.projections import default_write

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sidebyside as side

PAGE_SIZES = (1_000, 1_000_000)


def _frame(payload: bytes) -> bytes:
    frame = getattr(_logs, "frame", None)  # a checkout from before the checksummed lines writes bare lines
    return frame(payload) if frame is not None else payload + b"\n"


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), side.p99(samples)


async def page_build(root: Path, entries: int) -> dict[str, float]:
    """A transcript of `entries` entries in the store's format, written straight to its log."""
    async with Runtime(store=FsRuntimeStore(root, fsync="never")) as rt:
        await rt.create_worker(worker_id="w")
    store = FsRuntimeStore(root, fsync="never")
    log = store._projections.transcript("w")
    encode = msgspec.json.Encoder().encode
    fds = FdCache()
    for start in range(0, entries, 10_000):
        lines = [
            (
                n,
                _frame(
                    encode(
                        TranscriptRecord(
                            sequence=n,
                            role="user",
                            content=f"message number {n} " * 4,
                            run_id=f"run-{n}",
                            created_at=1.8e9 + n,
                            event_id=n + 1,
                        )
                    )
                ),
            )
            for n in range(start, min(entries, start + 10_000))
        ]
        log.append(fds, lines, default_write)
    fds.close()
    return {"entries": entries}


def page_time(root: Path, entries: int, reads: int) -> dict[str, float]:
    """Median and p99 of `reads` reads of the last 100-entry page, after 50 untimed ones."""
    read = FsRuntimeStore(root, fsync="never")._read_transcript
    for _ in range(50):
        read("w", entries - 100, 100)
    samples = []
    for _ in range(reads):
        t0 = time.perf_counter()
        page = read("w", entries - 100, 100)
        samples.append(time.perf_counter() - t0)
    assert len(page) == 100 and page[-1].sequence == entries - 1
    median, p99 = _stats(samples)
    return {"median_us": median * 1e6, "p99_us": p99 * 1e6}


_SERVE = """
import sys, time, anyio
t0 = float(sys.argv[2])
from worker_runtime_core import Runtime
from worker_runtime_store_fs import FsRuntimeStore
async def main():
    async with Runtime(store=FsRuntimeStore(sys.argv[1])) as rt:
        summary = await rt.summary()
        print(time.time() - t0, summary.workers.total, flush=True)
anyio.run(main)
"""


async def build_recovery_set(root: Path, workers: int, inputs: int) -> None:
    async with Runtime(store=FsRuntimeStore(root, fsync="never"), limits=Limits(max_workers=workers)) as rt:
        for n in range(workers):
            await rt.create_worker(worker_id=f"w{n:05d}")

        async def drive(first: int) -> None:
            for n in range(first, workers, 200):
                wid = f"w{n:05d}"
                for i in range(inputs):
                    ack = await rt.send_input(wid, f"input {i} for {wid}")
                    await rt.wait_for_run(wid, ack.run_id)

        async with anyio.create_task_group() as tg:
            for first in range(200):
                tg.start_soon(drive, first)


def recovery_build(root: Path, workers: int, inputs: int) -> dict[str, float]:
    t0 = time.perf_counter()
    anyio.run(build_recovery_set, root, workers, inputs)
    return {"built_s": time.perf_counter() - t0}


def recovery_time(tree: side.Tree, root: Path, workers: int) -> dict[str, float]:
    """From starting a fresh process on `tree`'s code to its Runtime serving the recovery set."""
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, str(root), repr(time.time())],
        env=side.env_for(tree),
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, total = done.stdout.split()
    assert int(total) == workers
    return {"serving_s": float(elapsed)}


async def group_commit(tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, policy, workers, per in (
        ("always_1000", "always", 1000, 5),
        ("never_1000", "never", 1000, 5),
        ("always_1", "always", 1, 300),
    ):
        async with Runtime(store=FsRuntimeStore(tmp / label, fsync=policy)) as rt:  # type: ignore[arg-type]
            for n in range(workers):
                await rt.create_worker(worker_id=f"w{n}")

            async def drive(wid: str, rt: Runtime = rt, per: int = per) -> None:
                for _ in range(per):
                    ack = await rt.send_input(wid, "hello")
                    await rt.wait_for_run(wid, ack.run_id)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for n in range(workers):
                    tg.start_soon(drive, f"w{n}")
            out[label] = workers * per / (time.perf_counter() - t0)
    out["ratio"] = out["always_1000"] / out["never_1000"]
    return out


QUEUED_INPUTS = 100
QUEUED_BYTES = 64 * 1024
EMITS = 40  # entry writes timed per case (a tree that re-writes the queue with each adds 6.4 MB a line)


class _Emits:
    """What the timed run is told and what it measured."""

    def __init__(self) -> None:
        self.go = anyio.Event()
        self.done = anyio.Event()
        self.times: list[float] = []


def _emitter(emits: _Emits) -> type[Engine]:
    class Emitter(Engine):
        name = "emitter"

        async def run(self, ctx: RunContext) -> None:
            if ctx.content != "first":
                return
            await emits.go.wait()
            for n in range(EMITS):
                t0 = time.perf_counter()
                await ctx.emit(f"entry {n}")
                emits.times.append(time.perf_counter() - t0)
            emits.done.set()
            await anyio.sleep_forever()

    return Emitter


async def queued_writes(tmp: Path) -> dict[str, float]:
    """Per fsync policy and queue length: the median time of one `ctx.emit` of the active run, and log bytes."""
    out: dict[str, float] = {}
    for policy in ("always", "never"):
        for queued in (0, QUEUED_INPUTS):
            emits = _Emits()
            root = tmp / f"{policy}-{queued}"
            store = FsRuntimeStore(root, fsync=policy)  # type: ignore[arg-type]
            engines = {"emitter": _emitter(emits)}
            async with Runtime(store=store, profiles={"e": ProfileConfig("emitter")}, engines=engines) as rt:
                await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "e"})
                await rt.send_input("w", "first")
                for n in range(queued):
                    await rt.send_input("w", f"{n:04d}" + "x" * (QUEUED_BYTES - 4), on_busy="enqueue")
                size = sum(p.stat().st_size for p in (root / "events").glob("*.jsonl"))
                emits.go.set()
                await emits.done.wait()
                grown = sum(p.stat().st_size for p in (root / "events").glob("*.jsonl")) - size
                await rt.stop_worker("w")
            out[f"{policy}_{queued}_us"] = statistics.median(emits.times) * 1e6
            out[f"{policy}_{queued}_bytes"] = grown / EMITS
        out[f"{policy}_ratio"] = out[f"{policy}_{QUEUED_INPUTS}_us"] / out[f"{policy}_0_us"]
    return out


def _child(args: list[str]) -> dict[str, Any]:
    kind, root, *rest = args
    numbers = [int(n) for n in rest]
    match kind:
        case "page-build":
            return anyio.run(page_build, Path(root), *numbers)
        case "page":
            return page_time(Path(root), numbers[0], 2_000)
        case "page-count":  # what callgrind counts: `reads` reads after the same set-up
            page_time(Path(root), numbers[0], numbers[1])
            return {}
        case "recovery-build":
            return recovery_build(Path(root), *numbers)
        case "queued":
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                return anyio.run(queued_writes, Path(tmp))
        case _:
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                return anyio.run(group_commit, Path(tmp))


ROWS = [
    side.Row("last 100-entry page of 1,000 entries, median (µs)", "page 1000", "median_us"),
    side.Row("last 100-entry page of 1,000 entries, p99 (µs)", "page 1000", "p99_us"),
    side.Row("last 100-entry page of 1,000,000 entries, median (µs)", "page 1000000", "median_us"),
    side.Row("last 100-entry page of 1,000,000 entries, p99 (µs)", "page 1000000", "p99_us"),
    side.Row("page ratio 1,000,000 / 1,000 entries (medians)", "page ratio", "ratio", "at most 1.5", 2),
    side.Row("process start to serving, recovery set (s)", "recovery", "serving_s", "under 2", 2),
    side.Row("runs/s, 1,000 workers, fsync=always", "commit", "always_1000", "", 0),
    side.Row("runs/s, 1,000 workers, fsync=never", "commit", "never_1000", "", 0),
    side.Row("fsync=always / never, 1,000 workers", "commit", "ratio", "at least 0.8", 2),
    side.Row("runs/s, 1 worker alone, fsync=always (one fsync per write)", "commit", "always_1", "", 0),
    side.Row("entry write, no queue, fsync=always (µs)", "queued", "always_0_us", "", 0),
    side.Row("entry write, 100 queued x 64 KiB, fsync=always (µs)", "queued", "always_100_us", "", 0),
    side.Row("with / without the queue, fsync=always", "queued", "always_ratio", "about 1", 2),
    side.Row("entry write, no queue, fsync=never (µs)", "queued", "never_0_us", "", 0),
    side.Row("entry write, 100 queued x 64 KiB, fsync=never (µs)", "queued", "never_100_us", "", 0),
    side.Row("with / without the queue, fsync=never", "queued", "never_ratio", "about 1", 2),
    side.Row("log bytes per entry write, no queue", "queued", "never_0_bytes", "", 0),
    side.Row("log bytes per entry write, 100 queued x 64 KiB", "queued", "never_100_bytes", "", 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 workers in the recovery set")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per page read (valgrind) instead of timing"
    )
    parser.add_argument("--only", choices=["page", "recovery", "commit", "queued"], help="one measurement only")
    side.add_arguments(parser, rounds=5)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    forest = side.trees(args.baseline)
    workers = 1_000 if args.quick else 10_000
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    print(side.machine(" (quick)" if args.quick else ""))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        dirs = {t.label: tmp / f"tree{n}" for n, t in enumerate(forest)}
        if args.instructions or args.only in (None, "page"):
            for t in forest:
                for entries in PAGE_SIZES:
                    side.child(t, __file__, ["page-build", str(dirs[t.label] / f"page-{entries}"), str(entries)])
        if args.instructions:
            big = str(PAGE_SIZES[-1])
            print("instructions per read of the last 100-entry page of 1,000,000 entries (callgrind)")
            counts = {
                t.label: side.instructions(
                    t, __file__, ["page-count", str(dirs[t.label] / f"page-{big}"), big], 200, 1_200
                )
                for t in forest
            }
            line = ", ".join(f"{label}: {n:,.0f}" for label, n in counts.items())
            if len(forest) > 1:
                line += f"; this / baseline {counts['this tree'] / counts['baseline']:.2f}"
            print(line)
            return
        if args.only in (None, "page"):
            for entries in PAGE_SIZES:
                results[f"page {entries}"] = side.interleave(
                    forest,
                    args.rounds,
                    lambda t, e=entries: side.child(t, __file__, ["page", str(dirs[t.label] / f"page-{e}"), str(e)]),
                )
            results["page ratio"] = {
                t.label: [
                    {"ratio": big["median_us"] / small["median_us"]}
                    for small, big in zip(results["page 1000"][t.label], results["page 1000000"][t.label], strict=True)
                ]
                for t in forest
            }
        if args.only in (None, "recovery"):
            built = {}
            for t in forest:
                root = dirs[t.label] / "recovery"
                built[t.label] = side.child(t, __file__, ["recovery-build", str(root), str(workers), "50"])
            results["recovery"] = side.interleave(
                forest, args.rounds, lambda t: recovery_time(t, dirs[t.label] / "recovery", workers)
            )
            print(
                f"recovery set: {workers:,} workers x 100 entries; built in "
                + ", ".join(f"{label} {b['built_s']:.0f} s" for label, b in built.items())
            )
        if args.only in (None, "commit"):
            for t in forest:
                dirs[t.label].mkdir(parents=True, exist_ok=True)
            results["commit"] = side.interleave(
                forest, args.rounds, lambda t: side.child(t, __file__, ["commit", str(dirs[t.label])])
            )
        if args.only == "queued":  # not part of the default run: the baseline's lines hold the whole queue
            for t in forest:
                dirs[t.label].mkdir(parents=True, exist_ok=True)
            results["queued"] = side.interleave(
                forest, args.rounds, lambda t: side.child(t, __file__, ["queued", str(dirs[t.label])])
            )
    print(f"medians over {args.rounds} rounds; each page figure from 2,000 reads")
    side.print_table(ROWS, results, forest)


if __name__ == "__main__":
    main()
