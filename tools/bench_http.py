"""HTTP benchmark: the Runtime's routes against a bare Starlette + msgspec route, side by side, with wrk.

Run it with ``hatch run bench-http`` (needs ``wrk``: ``apt-get install wrk``).
Each server runs in its own process on uvicorn (one worker process) pinned to one core; wrk runs pinned to the
other core. Measured, in one run:

* ``GET /v1/workers/{id}`` (the Runtime app: memory store, token, request id, Origin and Host checks on)
  against ``GET /bare/workers/{id}`` (a bare Starlette route that encodes a Worker built once with msgspec);
* ``POST /v1/workers/{id}/input`` (echo engine) against ``POST /bare/workers/{id}/input`` (a bare route that
  decodes the body with msgspec and answers 202 with an ack built once, encoded with msgspec), rotating over
  the Workers and counting only the 202 answers;
* durable creates: ``POST /v1/workers`` with a new worker id each time on a Runtime whose store is an
  FsRuntimeStore with ``fsync = "always"`` (``--durable-connections``, default 32), counting only the 201
  answers; a server makes at most a few tens of thousands of Workers, well below its ``max_workers`` (200,000).
  Target: p99 under 50 ms.

With ``--baseline PATH`` (another checkout) the Runtime of that checkout is measured too, in the same rounds in
rotating order, its code imported from its own ``packages/*/src`` (tools/_sidebyside.py), and the table adds
this / baseline.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sidebyside as side

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
# A script that counts the answers with `accepted` status apart from the others, printed by `done`; `request` is
# one expression over `n` (the request's number) and `ids` (the Worker ids the requests rotate over).
COUNTING_LUA = """
local n, ids, threads = 0, {}, {}
for i = 1, %(workers)d do ids[i] = string.format("w%%04d", i) end
wrk.headers["authorization"] = "Bearer %(token)s"
wrk.headers["content-type"] = "application/json"
setup = function(thread) table.insert(threads, thread) end
init = function() accepted = 0; other = 0 end
request = function()
  n = n + 1
  return %(request)s
end
response = function(status, headers, body)
  if status == %(accepted)d then accepted = accepted + 1 else other = other + 1 end
end
done = function(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("ACCEPTED %%d OTHER %%d\\n", a, o))
end
"""
POST_REQUEST = (
    """wrk.format("POST", "%(prefix)s" .. ids[(n %% %(workers)d) + 1] .. "/input", nil, '{"content": "hello"}')"""
)
CREATE_REQUEST = """wrk.format("POST", "/v1/workers", nil, string.format('{"worker_id": "%(tag)s-%%07d"}', n))"""
DURABLE_MAX_WORKERS = 200_000


def serve(kind: str, port: int, workers: int, gc_mode: str, store_dir: str | None = None) -> None:
    """One server process: ``runtime`` (the Runtime app), ``bare`` (Starlette + msgspec) or ``durable`` (the
    Runtime app on an FsRuntimeStore in `store_dir` with fsync always)."""
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
        store: Any = None
        limits = Limits(max_workers=workers + 10)
        if kind == "durable":
            from worker_runtime_store_fs import FsRuntimeStore

            store = FsRuntimeStore(store_dir, fsync="always")
            limits = Limits(max_workers=DURABLE_MAX_WORKERS)
        async with Runtime(runtime_id="rt-bench", limits=limits, store=store) as rt:
            for i in range(1, workers + 1):
                await rt.create_worker(worker_id=f"w{i:04d}")
            app: Any
            if kind in ("runtime", "durable"):
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


def _lua(kind: str, method: str, workers: int, tag: str = "c") -> str:
    """The wrk script for one server (``runtime`` or ``bare``) and route (``get``, ``post`` or ``create``, whose
    new worker ids start with `tag`)."""
    prefix = "/bare/workers/" if kind == "bare" else "/v1/workers/"
    fields = {"workers": workers, "token": TOKEN, "prefix": prefix, "tag": tag}
    if method == "get":
        return GET_LUA % fields
    request, accepted = (CREATE_REQUEST, 201) if method == "create" else (POST_REQUEST, 202)
    return COUNTING_LUA % {**fields, "request": request % fields, "accepted": accepted}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    kind: str,
    workers: int,
    core: int,
    gc_mode: str,
    callgrind_out: str | None = None,
    tree: side.Tree | None = None,
    store_dir: str | None = None,
) -> tuple[subprocess.Popen[str], int]:
    """A server process of `kind` running `tree`'s code (this checkout's by default)."""
    port = _free_port()
    cmd = ["taskset", "-c", str(core)]
    if callgrind_out:  # counting starts only when _count_instructions switches it on
        cmd += ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={callgrind_out}"]
    cmd += [sys.executable, __file__, "--serve", kind, "--port", str(port), "--workers", str(workers)]
    cmd += ["--gc", gc_mode] + (["--store", store_dir] if store_dir else [])
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if callgrind_out else None,
        text=True,
        env=side.env_for(tree or side.trees(None)[0]),
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


def _count_instructions(
    kind: str, method: str, args: argparse.Namespace, tree: side.Tree | None = None
) -> tuple[float, dict[str, float]]:
    """Instructions per request the server executes (callgrind), under the same wrk load as the timed runs.

    Unlike req/s, the count does not move with this machine's speed: the same code, load and inputs give the same
    count to within about 1%.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        proc, port = _start(kind, args.workers, core=0, gc_mode=args.gc, callgrind_out=out, tree=tree)
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
    forest = side.trees(args.baseline)
    print(
        f"instructions per request on the server (callgrind), wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"{args.workers} workers, gc {args.gc}; ratio = bare / Runtime, the req/s ratio at equal instructions per cycle"
    )
    print(f"{'route':<12} {'server':<10} {'Runtime':>10} {'bare':>10} {'ratio':>7}  requests counted (Runtime, bare)")
    for label, method in (("GET worker", "get"), ("POST input", "post")):
        if args.only and method != args.only:
            continue
        bare, b_run = _count_instructions("bare", method, args)
        for tree in forest:
            runtime, r_run = _count_instructions("runtime", method, args, tree)
            other = int(r_run.get("other", 0) + b_run.get("other", 0))
            counted = f"{int(r_run['requests'])}, {int(b_run['requests'])}" + (f" ({other} not 202)" if other else "")
            print(f"{label:<12} {tree.label:<10} {runtime:>10.0f} {bare:>10.0f} {bare / runtime:>6.2f}x  {counted}")


ROUTES = (("GET worker", "get"), ("POST input", "post"), ("durable create", "create"))


def _measure(
    server: str, tree: side.Tree, method: str, args: argparse.Namespace, tmp: str, round_: int
) -> dict[str, float]:
    """One timed wrk run (after a warm-up) against a fresh server: `server` is ``bare`` or a tree's Runtime."""
    durable = method == "create"
    kind = "bare" if server == "bare" else "durable" if durable else "runtime"
    store_dir = tempfile.mkdtemp(dir=tmp) if durable else None
    connections = args.durable_connections if durable else args.connections
    proc, port = _start(kind, 0 if durable else args.workers, core=0, gc_mode=args.gc, tree=tree, store_dir=store_dir)
    try:
        _wrk(port, _lua(kind, method, args.workers, tag="warm"), 2, connections, core=1)  # warm-up
        return _wrk(port, _lua(kind, method, args.workers, tag=f"r{round_}"), args.seconds, connections, core=1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if store_dir:
            shutil.rmtree(store_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["runtime", "bare", "durable"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=256, help="Workers the requests rotate over (default 256)")
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--durable-connections", type=int, default=32, help="wrk connections of the durable creates (default 32)"
    )
    side.add_arguments(parser, rounds=5)
    parser.add_argument(
        "--gc",
        choices=["default", "off", "frozen"],
        default="default",
        help="the servers' garbage collector: as is, disabled, or frozen after set-up with a higher threshold",
    )
    parser.add_argument("--only", choices=["get", "post", "create"], help="measure one route only")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request with valgrind's callgrind instead of timing (steady on a noisy machine)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers, args.gc, args.store)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.instructions:
        _instructions(args)
        return
    forest = side.trees(args.baseline)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for label, method in ROUTES:
            if args.only and method != args.only:
                continue
            # the Runtime of each tree, and the bare route (not for creates: it has no store to be durable in)
            servers = [(t.label, t) for t in forest] + ([] if method == "create" else [("bare", forest[-1])])
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in servers}
            for n in range(args.rounds):
                # All servers back to back, in alternating order: this machine's speed drifts by 10-20% within
                # seconds, and a ratio taken within one round sees all of them under about the same drift.
                for name, tree in side.order(servers, n):
                    runs[name].append(_measure(name, tree, method, args, tmp, n))
            rows.append((label, runs))
    print(side.machine())
    print(
        f"wrk -t1 -c{args.connections} (durable creates -c{args.durable_connections}) -d{args.seconds}s, server on "
        f"core 0, wrk on core 1, {args.workers} workers, gc {args.gc}, {args.rounds} rounds; medians over the "
        "rounds, ratios = median of the per-round ratios (range); durable creates: fsync always, 201s counted"
    )
    print("| route | server | req/s | p50 ms | p99 ms | vs bare | this / baseline | answers (other) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in rows:
        for name, rs in runs.items():
            rps, p50, p99 = (statistics.median(r[key] for r in rs) for key in ("rps", "p50_ms", "p99_ms"))
            vs_bare = vs_base = ""
            if "bare" in runs and name != "bare":
                vs_bare = _ratio(rs, runs["bare"])
            if name == "this tree" and "baseline" in runs:
                vs_base = _ratio(rs, runs["baseline"])
            answers = ""
            if "accepted" in rs[0]:
                answers = f"{sum(int(r['accepted']) for r in rs)} ({sum(int(r['other']) for r in rs)})"
            print(f"| {label} | {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {vs_bare} | {vs_base} | {answers} |")


def _ratio(runs: list[dict[str, float]], others: list[dict[str, float]]) -> str:
    ratios = [r["rps"] / o["rps"] for r, o in zip(runs, others, strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()
