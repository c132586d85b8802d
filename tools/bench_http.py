"""HTTP benchmark: the Runtime's routes against a bare Starlette + msgspec route, side by side, with wrk.

Run it with ``hatch run bench-http`` (needs ``wrk``: ``apt-get install wrk``).
Each server runs in its own process on uvicorn (one worker process) pinned to one core; wrk runs pinned to the
other core. Measured, in one run:

* ``GET /v1/workers/{id}`` (the Runtime app: memory store, token, request id, Origin and Host checks on)
  against ``GET /bare/workers/{id}`` (a bare Starlette route that encodes a Worker built once with msgspec);
* ``POST /v1/workers/{id}/input`` (echo engine) against ``POST /bare/workers/{id}/input`` (a bare route that
  decodes the body with msgspec and answers 202 with an ack built once, encoded with msgspec), rotating over
  the Workers and counting only the 202 answers.

Both servers run with the uvicorn settings of ``worker-runtime-http serve`` (``cli.UVICORN_OPTIONS``: the
httptools parser, no Server header, no proxy headers).

It prints the medians over the rounds of requests per second, p50 and p99 latency, and the median of the
per-round ratios to the bare route with their range. It never gates a build.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOKEN = "bench-token"
GET_LUA = """
local n, ids = 0, {}
for i = 1, %(workers)d do ids[i] = string.format("w%%04d", i) end
wrk.headers["authorization"] = "Bearer %(token)s"
request = function()
  n = n + 1
  return wrk.format("GET", "%(prefix)s" .. ids[(n %% %(workers)d) + 1])
end
"""
POST_LUA = """
local n, ids, threads = 0, {}, {}
for i = 1, %(workers)d do ids[i] = string.format("w%%04d", i) end
wrk.headers["authorization"] = "Bearer %(token)s"
wrk.headers["content-type"] = "application/json"
setup = function(thread) table.insert(threads, thread) end
init = function() accepted = 0; other = 0 end
request = function()
  n = n + 1
  return wrk.format("POST", "%(prefix)s" .. ids[(n %% %(workers)d) + 1] .. "/input", nil, '{"content": "hello"}')
end
response = function(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
done = function(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("ACCEPTED %%d OTHER %%d\\n", a, o))
end
"""


def serve(kind: str, port: int, workers: int, gc_mode: str) -> None:
    """One server process: ``runtime`` (the Runtime app) or ``bare`` (Starlette + msgspec)."""
    import anyio
    import msgspec
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from worker_runtime_core import InputAckEnvelope, InputRequest, Limits, Runtime, WorkerEnvelope
    from worker_runtime_http import create_app
    from worker_runtime_http.cli import UVICORN_OPTIONS

    async def main() -> None:
        async with Runtime(runtime_id="rt-bench", limits=Limits(max_workers=workers + 10)) as rt:
            for i in range(1, workers + 1):
                await rt.create_worker(worker_id=f"w{i:04d}")
            app: Any
            if kind == "runtime":
                app = create_app(rt, token=TOKEN, bind=("127.0.0.1", port))
            else:
                # What a minimal Starlette + msgspec route does: no lookup, but msgspec decodes the body and
                # encodes the answer (a Worker and an ack built once, the same size as the Runtime's).
                worker = WorkerEnvelope(await rt.get_worker("w0001"))
                ack = InputAckEnvelope(await rt.send_input("w0001", "hello"))
                decoder = msgspec.json.Decoder(InputRequest)
                encode = msgspec.json.Encoder().encode

                async def get_worker(request: Request) -> Response:
                    return Response(encode(worker), media_type="application/json")

                async def send_input(request: Request) -> Response:
                    decoder.decode(await request.body())
                    return Response(encode(ack), status_code=202, media_type="application/json")

                app = Starlette(
                    routes=[
                        Route("/bare/workers/{worker_id}", get_worker, methods=["GET"]),
                        Route("/bare/workers/{worker_id}/input", send_input, methods=["POST"]),
                    ]
                )
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **UVICORN_OPTIONS
            )
            server = uvicorn.Server(config)
            import gc

            if gc_mode == "off":
                gc.disable()
            elif gc_mode == "frozen":
                gc.freeze()
                gc.set_threshold(10_000, 10, 10)
            print("READY", flush=True)
            await server.serve()

    try:
        anyio.run(main, backend="asyncio")
    except KeyboardInterrupt:
        pass


def _lua(kind: str, method: str, workers: int) -> str:
    """The wrk script for one server (``runtime`` or ``bare``) and route (``get`` or ``post``)."""
    prefix = "/v1/workers/" if kind == "runtime" else "/bare/workers/"
    template = GET_LUA if method == "get" else POST_LUA
    return template % {"workers": workers, "token": TOKEN, "prefix": prefix}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    kind: str, workers: int, core: int, gc_mode: str, callgrind_out: str | None = None
) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    cmd = ["taskset", "-c", str(core)]
    if callgrind_out:  # counting starts only when _count_instructions switches it on
        cmd += ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={callgrind_out}"]
    cmd += [sys.executable, __file__, "--serve", kind, "--port", str(port), "--workers", str(workers)]
    cmd += ["--gc", gc_mode]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if callgrind_out else None, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        raise SystemExit(f"{kind} server did not start")
    deadline = time.monotonic() + (120 if callgrind_out else 10)
    while time.monotonic() < deadline:  # wait until uvicorn accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def _wrk(port: int, lua: str, seconds: int, connections: int, core: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    try:
        out = subprocess.run(
            ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name,
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert found, out
        value, unit = float(found.group(1)), found.group(2)
        result[f"p{pct}_ms"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    accepted = re.search(r"ACCEPTED (\d+) OTHER (\d+)", out)
    duration = float(re.search(r"requests in ([\d.]+)(ms|s|m)", out).group(1))  # type: ignore[union-attr]
    if accepted:
        result["accepted"] = float(accepted.group(1))
        result["other"] = float(accepted.group(2))
        result["rps"] = result["accepted"] / duration  # only the 202 answers count
    return result


def _count_instructions(kind: str, method: str, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """Instructions per request the server executes (callgrind), under the same wrk load as the timed runs.

    Unlike req/s, the count does not move with this machine's speed: the same code, load and inputs give the same
    count to within about 1%.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        proc, port = _start(kind, args.workers, core=0, gc_mode=args.gc, callgrind_out=out)
        try:
            lua = _lua(kind, method, args.workers)
            _wrk(port, lua, 3, args.connections, core=1)  # warm-up, not counted
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
            result = _wrk(port, lua, args.seconds, args.connections, core=1)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        total = 0
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name)) as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total / result["requests"], result


def _instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    print(
        f"instructions per request on the server (callgrind), wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"{args.workers} workers, gc {args.gc}; ratio = bare / Runtime, the req/s ratio at equal instructions per cycle"
    )
    print(f"{'route':<12} {'Runtime':>10} {'bare':>10} {'ratio':>7}  requests counted (Runtime, bare)")
    for label, method in (("GET worker", "get"), ("POST input", "post")):
        if args.only and method != args.only:
            continue
        runtime, r_run = _count_instructions("runtime", method, args)
        bare, b_run = _count_instructions("bare", method, args)
        other = int(r_run.get("other", 0) + b_run.get("other", 0))
        counted = f"{int(r_run['requests'])}, {int(b_run['requests'])}" + (f" ({other} not 202)" if other else "")
        print(f"{label:<12} {runtime:>10.0f} {bare:>10.0f} {bare / runtime:>6.2f}x  {counted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["runtime", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=256, help="Workers the requests rotate over (default 256)")
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs both servers back to back (default 5)")
    parser.add_argument(
        "--gc",
        choices=["default", "off", "frozen"],
        default="default",
        help="the servers' garbage collector: as is, disabled, or frozen after set-up with a higher threshold",
    )
    parser.add_argument("--only", choices=["get", "post"], help="measure one route only")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request with valgrind's callgrind instead of timing (steady on a noisy machine)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers, args.gc)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.instructions:
        _instructions(args)
        return
    rows = []
    for label, method in (("GET worker", "get"), ("POST input", "post")):
        if args.only and method != args.only:
            continue
        runs: dict[str, list[dict[str, float]]] = {"runtime": [], "bare": []}
        for n in range(args.rounds):
            # Both servers back to back, in alternating order: this machine's speed drifts by 10-20% within
            # seconds, and a ratio taken within one round sees both servers under about the same drift.
            kinds = ("runtime", "bare") if n % 2 == 0 else ("bare", "runtime")
            for kind in kinds:
                proc, port = _start(kind, args.workers, core=0, gc_mode=args.gc)
                try:
                    lua = _lua(kind, method, args.workers)
                    _wrk(port, lua, 2, args.connections, core=1)  # warm-up
                    runs[kind].append(_wrk(port, lua, args.seconds, args.connections, core=1))
                finally:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=30)
        rows.append((label, runs))
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, server on core 0, wrk on core 1, {args.workers} workers, "
        f"gc {args.gc}, {args.rounds} rounds; medians over the rounds, ratio = median of the per-round ratios"
    )
    print(f"{'route':<12} {'server':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}  ratio range")
    for label, runs in rows:
        ratios = [r["rps"] / b["rps"] for r, b in zip(runs["runtime"], runs["bare"], strict=True)]
        for kind in ("runtime", "bare"):
            rs = runs[kind]
            rps, p50, p99 = (statistics.median(r[key] for r in rs) for key in ("rps", "p50_ms", "p99_ms"))
            ratio = statistics.median(ratios) if kind == "runtime" else 1.0
            spread = f"  {min(ratios):.2f}-{max(ratios):.2f}" if kind == "runtime" else ""
            extra = ""
            if "accepted" in rs[0]:
                extra = f"  (202: {sum(int(r['accepted']) for r in rs)}, other: {sum(int(r['other']) for r in rs)})"
            print(f"{label:<12} {kind:<8} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {ratio:>7.2f}x{spread}{extra}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
