"""Overhead of the typed client against raw httpx + json.loads, side by side (never a test).

    hatch run bench-client

Starts a Runtime process (memory store) on 127.0.0.1, creates one Worker, then times `get_worker` both ways
over the same `httpx.AsyncClient` (same connection pool), alternating blocks of calls so drift hits both
alike: median and p99 per call, and the ratio. Target: typed at most 1.05x raw.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO

import anyio
import httpx

from worker_runtime_client import RuntimeClient

TOKEN = "bench-token"


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def _start() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker_runtime_http", "serve", "--host", "127.0.0.1", "--port", "0",
         "--store", "memory", "--token", TOKEN],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()  # the access log goes on
            return proc, found.group(1)
    raise RuntimeError("the server did not start")


async def bench(url: str, calls: int, block: int) -> dict[str, list[float]]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url) as http:
        client = RuntimeClient(url, token=TOKEN, client=http)
        wid = (await client.create_worker()).worker_ref.worker_id
        path = f"/v1/workers/{wid}"

        async def raw() -> object:
            response = await http.get(path, headers=headers)
            response.raise_for_status()
            return json.loads(response.content)["worker"]

        async def typed() -> object:
            return await client.get_worker(wid)

        samples: dict[str, list[float]] = {"raw": [], "typed": []}
        for _ in range(200):
            await raw()
            await typed()
        clock = time.perf_counter
        for round_ in range(calls // block):
            order = [("raw", raw), ("typed", typed)] if round_ % 2 == 0 else [("typed", typed), ("raw", raw)]
            for name, call in order:
                for _ in range(block):
                    t0 = clock()
                    await call()
                    samples[name].append(clock() - t0)
    return samples


def main() -> None:
    proc, url = _start()
    try:
        samples = anyio.run(bench, url, 10_000, 500)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d}"
    )
    print("| get_worker over one pooled connection | median (µs) | p99 (µs) |")
    print("| --- | --- | --- |")
    stats = {}
    for name in ("raw", "typed"):
        s = sorted(samples[name])
        stats[name] = (statistics.median(s) * 1e6, s[int(len(s) * 0.99) - 1] * 1e6)
        label = "raw httpx + json.loads" if name == "raw" else "RuntimeClient.get_worker (typed)"
        print(f"| {label} | {stats[name][0]:,.0f} | {stats[name][1]:,.0f} |")
    ratio = stats["typed"][0] / stats["raw"][0]
    p99_ratio = stats["typed"][1] / stats["raw"][1]
    print(f"| typed / raw | {ratio:.3f} | {p99_ratio:.3f} |")
    print(
        f"target: median ratio at most 1.05 ({'met' if ratio <= 1.05 else 'not met'}); {len(samples['raw'])} calls each"
    )


if __name__ == "__main__":
    main()
