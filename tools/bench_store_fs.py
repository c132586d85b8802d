"""Benchmarks of worker-runtime-store-fs, side by side with their targets (never a test).

    hatch run bench-store-fs            # page cost, recovery, group commit
    hatch run bench-store-fs --quick    # smaller recovery set, for a smoke run

Page cost: the last 100-entry page of a 1,000,000-entry transcript against that of a 1,000-entry one, read
through the store (median and p99 of 2,000 reads each). Target: ratio at most 1.5.
Recovery: 10,000 workers with 100 transcript entries each (50 inputs answered by echo), made through the Runtime;
then the time from starting a fresh process to serving (median of 5). Target: under 2 s.
Group commit: runs/s of 1,000 workers at once, fsync=always against fsync=never, and one worker alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec

from worker_runtime_core import Limits, Runtime
from worker_runtime_core.records import TranscriptRecord
from worker_runtime_store_fs import FsRuntimeStore
from worker_runtime_store_fs.logs import FdCache, frame
from worker_runtime_store_fs.projections import default_write


def _stats(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


async def page_cost(tmp: Path) -> dict[str, float]:
    """Write transcripts of 1,000 and 1,000,000 entries in the store's format, then time the last page."""
    out: dict[str, float] = {}
    for entries in (1_000, 1_000_000):
        root = tmp / f"page-{entries}"
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
                    frame(
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
        read = store._read_transcript
        for _ in range(50):
            read("w", entries - 100, 100)
        samples = []
        for _ in range(2_000):
            t0 = time.perf_counter()
            page = read("w", entries - 100, 100)
            samples.append(time.perf_counter() - t0)
        assert len(page) == 100 and page[-1].sequence == entries - 1
        out[f"median_{entries}"], out[f"p99_{entries}"] = (s * 1e6 for s in _stats(samples))
    return out


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


def recovery(tmp: Path, workers: int, inputs: int) -> dict[str, float]:
    root = tmp / "recovery"
    t0 = time.perf_counter()
    anyio.run(build_recovery_set, root, workers, inputs)
    built = time.perf_counter() - t0
    samples = []
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-c", _SERVE, str(root), repr(time.time())], capture_output=True, text=True, check=True
        )
        elapsed, total = done.stdout.split()
        assert int(total) == workers
        samples.append(float(elapsed))
    median, _ = _stats(samples)
    return {"serving_s": median, "built_s": built, "workers": workers, "entries": inputs * 2}


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
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 workers in the recovery set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        page = anyio.run(page_cost, tmp)
        rec = recovery(tmp, 1_000 if args.quick else 10_000, 50)
        commit = anyio.run(group_commit, tmp)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d}" + (" (quick)" if args.quick else "")
    )
    print("| measure | 1,000 entries | 1,000,000 entries | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    for stat in ("median", "p99"):
        small, big = page[f"{stat}_1000"], page[f"{stat}_1000000"]
        print(f"| last 100-entry page, {stat} (µs) | {small:,.0f} | {big:,.0f} | {big / small:.2f} | at most 1.5 |")
    print()
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    print(
        f"| process start to serving, {rec['workers']:,.0f} workers x {rec['entries']:.0f} entries (median of 5) "
        f"| {rec['serving_s']:.2f} s | under 2 s |"
    )
    print(
        f"| runs/s, 1,000 workers, fsync=always / never | {commit['always_1000']:,.0f} / {commit['never_1000']:,.0f} "
        f"(ratio {commit['always_1000'] / commit['never_1000']:.2f}) | group commit shares fsyncs |"
    )
    print(f"| runs/s, 1 worker alone, fsync=always | {commit['always_1']:,.0f} | (one fsync per write) |")
    print(f"(building the recovery set took {rec['built_s']:.0f} s)")


if __name__ == "__main__":
    main()
