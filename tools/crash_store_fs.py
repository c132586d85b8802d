"""Crash test of the FS store: a child Runtime under input load is killed with SIGKILL, then restarted.

    hatch run crash-store-fs                 # 20 trials, 8 workers
    hatch run crash-store-fs --trials 3 --json

Each trial starts a child process that runs a Runtime on the FS store (fsync=always) and drives several
Workers concurrently, printing one line per acknowledged input. The parent reads acks until a random count,
kills the child with SIGKILL, restarts the Runtime on the same root and checks that every input whose ack it
received (in this trial or an earlier one) is in its Worker's transcript at the acknowledged sequence, that
no Worker is lost, that no run is left running, and that every log reads cleanly. Trials accumulate on one
root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from worker_runtime_core import Runtime, WorkerNotFoundError
from worker_runtime_store_fs import FsRuntimeStore


async def child(root: str, workers: int, trial: int) -> None:
    async with Runtime(runtime_id="rt-crash", store=FsRuntimeStore(root, checkpoint_every=500)) as rt:
        wids = [f"w{n}" for n in range(workers)]
        for wid in wids:
            try:
                await rt.get_worker(wid)
            except WorkerNotFoundError:
                await rt.create_worker(worker_id=wid)

        async def drive(wid: str) -> None:
            n = 0
            while True:
                input_id = f"t{trial}-{wid}-{n}"
                ack = await rt.send_input(wid, f"payload {input_id}", input_id=input_id)
                sys.stdout.write(f"ACK {wid} {input_id} {ack.run_id} {ack.input_sequence}\n")
                sys.stdout.flush()
                await rt.wait_for_run(wid, ack.run_id)
                n += 1

        async with anyio.create_task_group() as tg:
            for wid in wids:
                tg.start_soon(drive, wid)


async def verify(root: str, workers: int, acks: list[tuple[str, str, str, int]]) -> dict[str, float]:
    started = time.perf_counter()
    async with Runtime(store=FsRuntimeStore(root)) as rt:
        recovery_s = time.perf_counter() - started
        summary = await rt.summary()
        assert summary.workers.total == workers, f"{summary.workers.total} workers, expected {workers}"
        assert summary.workers.busy == 0, "a worker is busy right after restart"
        for wid, input_id, run_id, sequence in acks:
            page = await rt.transcript(wid, start=sequence, limit=1)
            assert page.items, f"acknowledged input {input_id} is missing"
            entry = page.items[0]
            assert (entry.content, entry.run_id) == (f"payload {input_id}", run_id), f"{input_id}: {entry}"
            run = await rt.get_run(wid, run_id)
            assert run.status != "running", f"run {run_id} still running"
        for n in range(workers):  # every transcript reads cleanly to the end
            start: int | None = 0
            while start is not None:
                page = await rt.transcript(f"w{n}", start=start, limit=1000)
                start = page.next_start
        after, expected = 0, 1
        while True:  # the whole event log reads cleanly, with no gap
            page = await rt.read_events(after=after, limit=1000)
            for event in page.events:
                assert event.id == expected, f"event id {event.id}, expected {expected}"
                expected += 1
            after = page.next_after
            if not page.has_more:
                break
        diagnostics = await rt.diagnostics()
        errors = [d for d in diagnostics if d.level == "error"]
        assert not errors, f"error diagnostics: {errors}"
        repairs = sum(1 for d in diagnostics if d.code == "torn_tail_repaired")
    return {"recovery_s": recovery_s, "repairs": repairs, "events": expected - 1}


def trial(
    root: str, workers: int, n: int, rng: random.Random, kept: list[tuple[str, str, str, int]]
) -> dict[str, float]:
    kill_after = rng.randint(1, 300)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", root, "--workers", str(workers), "--trial", str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acks: list[tuple[str, str, str, int]] = []
    for line in proc.stdout:
        if line.startswith("ACK "):
            _, wid, input_id, run_id, sequence = line.split()
            acks.append((wid, input_id, run_id, int(sequence)))
        if len(acks) >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    rest, err = proc.communicate(timeout=60)
    for line in rest.splitlines():  # acks written before the kill and still in the pipe count too
        if line.startswith("ACK "):
            _, wid, input_id, run_id, sequence = line.split()
            acks.append((wid, input_id, run_id, int(sequence)))
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child ended by itself ({proc.returncode}): {err[-2000:]}")
    kept.extend(acks)
    result = anyio.run(verify, root, workers, kept)  # every ack of every trial so far
    result["acks"] = len(acks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    parser.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--trial", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        anyio.run(child, args.child, args.workers, args.trial)
        return
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    results = []
    kept: list[tuple[str, str, str, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "store")
        for n in range(args.trials):
            results.append(trial(root, args.workers, n, rng, kept))
            if not args.json:
                r = results[-1]
                print(
                    f"trial {n + 1:2d}: {r['acks']:4.0f} acks kept, {r['events']:6.0f} events, "
                    f"{r['repairs']:.0f} torn tails repaired, restart {r['recovery_s'] * 1000:.0f} ms"
                )
    summary = {
        "seed": seed,
        "trials": len(results),
        "workers": args.workers,
        "acks_received": len(kept),
        "torn_tails_repaired": sum(r["repairs"] for r in results),
        "max_restart_ms": round(max(r["recovery_s"] for r in results) * 1000, 1),
    }
    print(json.dumps(summary) if args.json else f"all {len(results)} trials passed: {summary}")


if __name__ == "__main__":
    main()
