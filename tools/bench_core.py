"""Benchmarks of worker-runtime-core, side by side with their targets (never a test).

    hatch run bench-core                               # all three, asyncio and trio
    hatch run bench-core --quick                       # smaller counts, for a smoke run
    hatch run bench-core --only waiting                # one measurement (memory, latency, throughput, waiting)
    hatch run bench-core --baseline /tmp/base          # and another checkout, interleaved, with this / baseline
    hatch run bench-core --instructions --baseline /tmp/base   # instructions per send_input (callgrind)
    hatch run bench-core --busy                        # busy strategies, in instructions (callgrind)

Memory: RSS per idle Worker with 100,000 Workers in one memory Runtime (each with its `worker_created` event).
Latency: `send_input` until `wait_for_run` returns, echo engine, 10,000 runs one after another.
Throughput: 1,000 Workers each running inputs concurrently with the echo engine.
Waiting: RSS per Worker whose run waits for an answer (the `ask` engine, a 16-byte prompt), over the same Workers
idle, with 10,000 Workers in one memory Runtime: what a run waiting costs (its input, events, request and task).
Each measurement runs in a fresh child process so one does not skew the next; with ``--baseline`` the rounds
alternate between the two checkouts (tools/_sidebyside.py) and the table shows the medians over the rounds.
Instructions: callgrind's count of one `send_input` until `wait_for_run` returns (asyncio, memory store), where
timing is too noisy to separate 10%.
Busy strategies (``--busy``, callgrind, asyncio, memory store): one `send_input` with ``on_busy="enqueue"`` to an
idle Worker against one with ``reject`` (target: at most 1.10x); and a queue of 100 inputs behind a held run,
drained, against 101 inputs one after another, per run (the drain's runs/s is the inverse: target at least 0.9x).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import anyio

from worker_runtime_core import BuiltinProfile, Engine, Limits, ProfileConfig, RunContext, Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sidebyside as side


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


async def waiting(workers: int) -> dict[str, float]:
    """RSS per run waiting for an answer, over its Worker idle (`workers` of them, each asking a 16-byte prompt)."""
    limits = Limits(max_workers=workers + 1, max_page=1000)
    async with Runtime(limits=limits) as rt:
        ask = BuiltinProfile(name="ask")
        await rt.create_worker(worker_id="warm-up", profile=ask)
        warm = await rt.send_input("warm-up", "approve warm-up!")  # 16 bytes: the prompt of the ask engine
        while True:  # woken by each durable write, until the warm-up run has asked
            signal = rt.event_signal()
            if (await rt.open_requests()).requests:
                break
            await signal.wait()
        ids = [f"w{n:06d}" for n in range(workers)]
        for wid in ids:
            await rt.create_worker(worker_id=wid, profile=ask)
        gc.collect()
        idle = _rss_bytes()
        for n, wid in enumerate(ids):
            await rt.send_input(wid, f"approve {n:08d}")  # 16 bytes
        while True:  # every run has asked (its request is open)
            found, after = 0, 0
            while True:
                page = await rt.open_requests(after=after, limit=1000)
                found += len(page.requests)
                if page.next_after is None:
                    break
                after = page.next_after
            if found == workers + 1:
                break
            await anyio.sleep(0.05)
        gc.collect()
        asked = _rss_bytes()
        sample = (await rt.open_requests(limit=1)).requests[0]
        assert len(sample.request.prompt.encode()) == 16 and sample.run_id == warm.run_id
    return {"bytes_per_waiting_run": (asked - idle) / workers}


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


async def count(runs: int) -> dict[str, float]:
    """`runs` inputs after the latency warm-up, untimed: what callgrind counts (see `_sidebyside.instructions`)."""
    async with Runtime() as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        for _ in range(200 + runs):
            ack = await rt.send_input(wid, "hi")
            await rt.wait_for_run(wid, ack.run_id)
    return {"runs": runs}


async def count_on_busy(runs: int, on_busy: str) -> dict[str, float]:
    """`count` with an `on_busy`: to an idle Worker every strategy starts the run at once."""
    async with Runtime() as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        for _ in range(200 + runs):
            ack = await rt.send_input(wid, "hi", on_busy=on_busy)
            await rt.wait_for_run(wid, ack.run_id)
    return {"runs": runs}


_QUEUE = 100  # inputs per drained queue


class _Held(Engine):
    """Echo, except that an input ``hold`` waits for the benchmark to let it go (the queue fills behind it)."""

    name = "held"
    gate: anyio.Event

    async def run(self, ctx: RunContext) -> None:
        if ctx.content == "hold":
            await _Held.gate.wait()
        await ctx.emit(ctx.content)


async def queue_drain(rounds: int, queued: bool) -> dict[str, float]:
    """`rounds` rounds of a held run and `_QUEUE` inputs: queued behind it and drained (`queued`), or sent one
    after another once it has ended, each awaited (the same runs, the same engine)."""
    async with Runtime(profiles={"default": ProfileConfig("held")}, engines={"held": _Held}) as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        for _ in range(rounds + 2):  # + the warm-up
            _Held.gate = anyio.Event()
            held = await rt.send_input(wid, "hold")
            if queued:
                acks = [await rt.send_input(wid, "hi", on_busy="enqueue") for _ in range(_QUEUE)]
                _Held.gate.set()
                assert (await rt.wait_for_run(wid, acks[-1].run_id)).status == "completed"
            else:
                _Held.gate.set()
                await rt.wait_for_run(wid, held.run_id)
                for _ in range(_QUEUE):
                    ack = await rt.send_input(wid, "hi")
                    await rt.wait_for_run(wid, ack.run_id)
        assert (await rt.summary()).usage.runs == (rounds + 2) * (_QUEUE + 1)
    return {"runs": rounds * (_QUEUE + 1)}


def _child(kind: str, backend: str, quick: bool, n: int) -> dict[str, float]:
    match kind:
        case "count_reject" | "count_enqueue":
            return anyio.run(count_on_busy, n, kind.removeprefix("count_"), backend=backend)
        case "drain_queued" | "drain_sequential":
            return anyio.run(queue_drain, n, kind == "drain_queued", backend=backend)
        case "memory":
            return anyio.run(memory, 10_000 if quick else 100_000, backend=backend)
        case "latency":
            return anyio.run(latency, 1_000 if quick else 10_000, backend=backend)
        case "count":
            return anyio.run(count, n, backend=backend)
        case "waiting":
            return anyio.run(waiting, 2_000 if quick else 10_000, backend=backend)
        case _:
            return anyio.run(throughput, 1_000, 2 if quick else 20, backend=backend)


ROWS = [
    ("memory per idle worker (B)", "memory", "bytes_per_worker", "at most 512"),
    ("send_input -> completed, median (µs)", "latency", "median_us", "under 30"),
    ("send_input -> completed, p99 (µs)", "latency", "p99_us", "under 100"),
    ("throughput, 1,000 workers (runs/s)", "throughput", "runs_per_s", "at least 20,000"),
    ("memory per waiting run over idle (B)", "waiting", "bytes_per_waiting_run", "at most 2,048"),
]

KINDS = ("memory", "latency", "throughput", "waiting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per send_input (valgrind) instead of timing"
    )
    parser.add_argument(
        "--only", action="append", choices=KINDS, metavar="KIND", help=f"only this measurement ({', '.join(KINDS)})"
    )
    side.add_arguments(parser, rounds=1)
    parser.add_argument(
        "--busy", action="store_true", help="busy strategies: enqueue vs reject, a drained queue vs sequential input"
    )
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, backend, *n = args.child
        print(json.dumps(_child(kind, backend, args.quick, int(n[0]) if n else 0)))
        return
    forest = side.trees(args.baseline)
    print(side.machine(" (quick)" if args.quick else ""))
    if args.busy:
        busy(forest)
        return
    if args.instructions:
        print("instructions per send_input -> completed (callgrind, asyncio, memory store, echo engine)")
        counts = {t.label: side.instructions(t, __file__, ["count", "asyncio"], 500, 2_500) for t in forest}
        line = ", ".join(f"{label}: {n:,.0f}" for label, n in counts.items())
        if len(forest) > 1:
            line += f"; this / baseline {counts['this tree'] / counts['baseline']:.2f}"
        print(line)
        return
    quick = ["--quick"] if args.quick else []
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    kinds = args.only or KINDS
    for kind in kinds:
        for backend in ("asyncio", "trio"):
            results[f"{kind} {backend}"] = side.interleave(
                forest, args.rounds, lambda t, k=kind, b=backend: side.child(t, __file__, [k, b, *quick])
            )
    rows = [
        side.Row(f"{label}, {backend}", f"{kind} {backend}", key, target)
        for label, kind, key, target in ROWS
        for backend in ("asyncio", "trio")
        if kind in kinds
    ]
    side.print_table(rows, results, forest)
    if "throughput" in kinds:
        errors = sum(
            r["errors"] for b in ("asyncio", "trio") for runs in results[f"throughput {b}"].values() for r in runs
        )
        print(f"throughput errors: {errors:g}")


def busy(forest: list[side.Tree]) -> None:
    """The busy strategies' two ratios, in callgrind instructions (asyncio, memory store)."""
    print("busy strategies, instructions (callgrind, asyncio, memory store)")
    for tree in forest:
        per = {
            kind: side.instructions(tree, __file__, [kind, "asyncio"], small, large)
            for kind, small, large in (
                ("count_reject", 500, 2_500),
                ("count_enqueue", 500, 2_500),
                ("drain_sequential", 5, 25),
                ("drain_queued", 5, 25),
            )
        }
        enqueue = per["count_enqueue"] / per["count_reject"]
        drain = per["drain_sequential"] / per["drain_queued"]  # runs/s of the drain over runs/s of sequential input
        print(
            f"{tree.label}: send_input to an idle worker: reject {per['count_reject']:,.0f}, enqueue "
            f"{per['count_enqueue']:,.0f} ({enqueue:.3f}x, target at most 1.10x); per round of {_QUEUE + 1} runs: "
            f"sequential {per['drain_sequential']:,.0f}, queued {per['drain_queued']:,.0f} (drain runs/s "
            f"{drain:.3f}x of sequential, target at least 0.9x)"
        )


if __name__ == "__main__":
    main()
