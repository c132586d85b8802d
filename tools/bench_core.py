"""Benchmarks of worker-runtime-core, side by side with their targets (never a test).

    hatch run bench-core            # all three, asyncio and trio
    hatch run bench-core --quick    # smaller counts, for a smoke run

Memory: RSS per idle Worker with 100,000 Workers in one memory Runtime (each with its `worker_created` event).
Latency: `send_input` until `wait_for_run` returns, echo engine, 10,000 runs one after another.
Throughput: 1,000 Workers each running inputs concurrently with the echo engine.
Each measurement runs in a fresh child process so one does not skew the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import anyio

from worker_runtime_core import Limits, Runtime


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory(workers: int) -> dict[str, float]:
    async with Runtime(limits=Limits(max_workers=workers + 1)) as rt:  # + the warm-up worker
        await rt.create_worker(worker_id="warm-up")
        gc.collect()
        before = _rss_bytes()
        for n in range(workers):
            await rt.create_worker(worker_id=f"w{n:06d}")
        gc.collect()
        after = _rss_bytes()
        assert (await rt.summary()).workers.idle == workers + 1
    return {"bytes_per_worker": (after - before) / workers}


async def latency(runs: int) -> dict[str, float]:
    async with Runtime() as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        for _ in range(200):  # warm up
            ack = await rt.send_input(wid, "hi")
            await rt.wait_for_run(wid, ack.run_id)
        samples = []
        clock = time.perf_counter
        for _ in range(runs):
            t0 = clock()
            ack = await rt.send_input(wid, "hi")
            run = await rt.wait_for_run(wid, ack.run_id)
            samples.append(clock() - t0)
            assert run.status == "completed"
    samples.sort()
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[int(len(samples) * 0.99) - 1] * 1e6,
    }


async def throughput(workers: int, per_worker: int) -> dict[str, float]:
    async with Runtime() as rt:
        ids = [(await rt.create_worker(worker_id=f"w{n}")).worker_ref.worker_id for n in range(workers)]
        errors = 0

        async def drive(wid: str) -> None:
            nonlocal errors
            for _ in range(per_worker):
                ack = await rt.send_input(wid, "hi")
                if (await rt.wait_for_run(wid, ack.run_id)).status != "completed":
                    errors += 1

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for wid in ids:
                tg.start_soon(drive, wid)
        elapsed = time.perf_counter() - t0
        assert (await rt.summary()).usage.runs == workers * per_worker
    return {"runs_per_s": workers * per_worker / elapsed, "errors": errors}


def _child(kind: str, backend: str, quick: bool) -> dict[str, float]:
    match kind:
        case "memory":
            return anyio.run(memory, 10_000 if quick else 100_000, backend=backend)
        case "latency":
            return anyio.run(latency, 1_000 if quick else 10_000, backend=backend)
        case _:
            return anyio.run(throughput, 1_000, 2 if quick else 20, backend=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.quick)))
        return
    results: dict[tuple[str, str], dict[str, float]] = {}
    for kind in ("memory", "latency", "throughput"):
        for backend in ("asyncio", "trio"):
            cmd = [sys.executable, __file__, "--child", kind, backend] + (["--quick"] if args.quick else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[(kind, backend)] = json.loads(out)
    rows = [
        ("memory per idle worker (B)", "memory", "bytes_per_worker", 512, "at most"),
        ("send_input -> completed, median (µs)", "latency", "median_us", 30, "under"),
        ("send_input -> completed, p99 (µs)", "latency", "p99_us", 100, "under"),
        ("throughput, 1,000 workers (runs/s)", "throughput", "runs_per_s", 20_000, "at least"),
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d}" + (" (quick)" if args.quick else "")
    )
    print("| measure | target | asyncio | trio | asyncio / target |")
    print("| --- | --- | --- | --- | --- |")
    for label, kind, key, target, word in rows:
        a = results[(kind, "asyncio")][key]
        t = results[(kind, "trio")][key]
        print(f"| {label} | {word} {target:,} | {a:,.1f} | {t:,.1f} | {a / target:.2f} |")
    errors = results[("throughput", "asyncio")]["errors"] + results[("throughput", "trio")]["errors"]
    print(f"throughput errors: {errors:g}")


if __name__ == "__main__":
    main()
