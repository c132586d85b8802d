"""HTTP benchmark: the Runtime's routes against a bare Starlette + msgspec route, side by side, with wrk.

Run it with ``hatch run bench-http`` (needs ``wrk``: ``apt-get install wrk``).
Each server runs in its own process on uvicorn (one worker process) pinned to one core; wrk runs pinned to the
other core. Measured, in one run:

* ``GET /v1/workers/{id}`` (the Runtime app: memory store, token, request id, Origin and Host checks on)
  against ``GET /bare/workers/{id}`` (a bare Starlette route returning a body of the same size);
* ``POST /v1/workers/{id}/input`` (echo engine) against ``POST /bare/workers/{id}/input`` (a bare route that
  decodes the body with msgspec and answers 202 with a same-size ack), rotating over the Workers and counting
  only the 202 answers.

It prints requests per second, p50 and p99 latency and the ratio to the bare route. It never gates a build.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
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

    from worker_runtime_core import InputRequest, Limits, Runtime, WorkerEnvelope
    from worker_runtime_http import create_app

    async def main() -> None:
        async with Runtime(runtime_id="rt-bench", limits=Limits(max_workers=workers + 10)) as rt:
            for i in range(1, workers + 1):
                await rt.create_worker(worker_id=f"w{i:04d}")
            app: Any
            if kind == "runtime":
                app = create_app(rt, token=TOKEN, bind=("127.0.0.1", port))
            else:
                worker_body = msgspec.json.encode(WorkerEnvelope(await rt.get_worker("w0001")))
                ack_body = msgspec.json.encode({"ack": msgspec.to_builtins(await rt.send_input("w0001", "hello"))})
                decoder = msgspec.json.Decoder(InputRequest)

                async def get_worker(request: Request) -> Response:
                    return Response(worker_body, media_type="application/json")

                async def send_input(request: Request) -> Response:
                    decoder.decode(await request.body())
                    return Response(ack_body, status_code=202, media_type="application/json")

                app = Starlette(
                    routes=[
                        Route("/bare/workers/{worker_id}", get_worker, methods=["GET"]),
                        Route("/bare/workers/{worker_id}/input", send_input, methods=["POST"]),
                    ]
                )
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(kind: str, workers: int, core: int, gc_mode: str) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    cmd = ["taskset", "-c", str(core), sys.executable, __file__, "--serve", kind, "--port", str(port)]
    cmd += ["--workers", str(workers), "--gc", gc_mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        raise SystemExit(f"{kind} server did not start")
    deadline = time.monotonic() + 10
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
    accepted = re.search(r"ACCEPTED (\d+) OTHER (\d+)", out)
    duration = float(re.search(r"requests in ([\d.]+)(ms|s|m)", out).group(1))  # type: ignore[union-attr]
    if accepted:
        result["accepted"] = float(accepted.group(1))
        result["other"] = float(accepted.group(2))
        result["rps"] = result["accepted"] / duration  # only the 202 answers count
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["runtime", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=256, help="Workers the requests rotate over (default 256)")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is shown")
    parser.add_argument(
        "--gc",
        choices=["default", "off", "frozen"],
        default="default",
        help="the servers' garbage collector: as is, disabled, or frozen after set-up with a higher threshold",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers, args.gc)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows = []
    for label, method in (("GET worker", "get"), ("POST input", "post")):
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):  # interleaved rounds, best of each: the machine's drift hits both alike
            for kind, prefix in (("runtime", "/v1/workers/"), ("bare", "/bare/workers/")):
                proc, port = _start(kind, args.workers, core=0, gc_mode=args.gc)
                try:
                    template = GET_LUA if method == "get" else POST_LUA
                    lua = template % {"workers": args.workers, "token": TOKEN, "prefix": prefix}
                    _wrk(port, lua, 2, args.connections, core=1)  # warm-up
                    result = _wrk(port, lua, args.seconds, args.connections, core=1)
                finally:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=30)
                if kind not in results or result["rps"] > results[kind]["rps"]:
                    results[kind] = result
        rows.append((label, results))
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, server on core 0, wrk on core 1, {args.workers} workers, "
        f"gc {args.gc}, best of {args.rounds} interleaved rounds"
    )
    print(f"{'route':<12} {'server':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
    for label, results in rows:
        for kind in ("runtime", "bare"):
            r = results[kind]
            ratio = r["rps"] / results["bare"]["rps"]
            extra = f"  (202: {int(r['accepted'])}, other: {int(r['other'])})" if "accepted" in r else ""
            print(
                f"{label:<12} {kind:<8} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>7.2f}x{extra}"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
