"""Event stream benchmark: ``GET /v1/events/stream`` against a bare Starlette route streaming the same frames from
memory, side by side in one run, read by the same raw-socket client.

Run it with ``hatch run bench-stream`` (``--quick`` for a short run). Each server runs in its own process on uvicorn
with the settings of ``worker-runtime-http serve`` (``cli.UVICORN_OPTIONS``); the client is this process (asyncio,
raw sockets: it only counts frames and reads the time a frame names) for the replay figures, and ``--readers`` (2)
reader processes for the live ones, each with its share of the streams and a selector loop that only ``recv``s and
notes the time (``time.time``, the clock the server stamps frames with, shared on one machine; frames are parsed
afterwards), so that one Python process reading 1,000 sockets is not what the figure measures. Measured, per server:

* replay: one stream reading ``--events`` (100,000) durable events from ``after=0``, frames per second
  (target: the Runtime at least 0.5x the bare route);
* throughput: 10 streams replaying at once, frames per second in all (target: at least 0.8x);
* memory per idle open stream: the server's RSS with ``--idle`` (1,000) live-only streams open, less before,
  divided by their number (target: at most 16 KiB);
* fan-out: ``--fanout`` (1,000) open streams while the server logs 10 events a second (Workers created; each
  frame names its ``created_at``), delivery latency from the event's time to the client reading its frame, p50
  and p99 (target: p99 under 50 ms), and the streams that got fewer frames than the others (target: none);
* deltas: 100 streams with ``deltas=true`` while a run writes 10 pieces a second (each names the time it was
  written), latency from the write to the client reading its ``output_delta``, p50 and p99 (target: p50 at most
  1.5x the bare route's, p99 under 10 ms).

The bare route streams frames built once (``starlette.responses.StreamingResponse`` over an async generator, one
frame per ``yield``); for the live figures the server's ticker hands each open bare stream the frame through an
``asyncio.Queue``. Figures on a shared machine are indicative. It never gates a build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
_CREATED = re.compile(rb'"created_at":"([^"]+)"')
_SENT = re.compile(rb"sent=([0-9.]+)")


# --- the servers -------------------------------------------------------------------------------------------------


def serve(kind: str, port: int, events: int) -> None:
    import logging

    import anyio
    import uvicorn
    from starlette.responses import StreamingResponse

    from worker_runtime_core import Engine, Limits, ProfileConfig, RunContext, Runtime
    from worker_runtime_http import create_app
    from worker_runtime_http.cli import UVICORN_OPTIONS

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "socket.send() raised" for each closed client
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    class Writer(Engine):
        name = "writer"

        async def run(self, ctx: RunContext) -> None:
            async with ctx.begin_entry() as entry:
                while (piece := await pieces.get()) is not None:
                    entry.write(piece)

    limits = Limits(max_workers=events + 100_000, max_streams=10_000)
    rt = Runtime(
        runtime_id="rt-bench", limits=limits, profiles={"writer": ProfileConfig("writer")}, engines={"writer": Writer}
    )
    app = create_app(rt, token=TOKEN)
    frames: list[bytes] = []
    queues: set[asyncio.Queue[bytes]] = set()

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"").decode()
        live = "live" in query
        last = int(query.split("n=")[1]) if "n=" in query else len(frames)

        async def body() -> Any:
            if not live:
                for frame in frames[len(frames) - last :]:
                    yield frame
                return
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            queues.add(queue)
            try:
                while True:
                    yield await queue.get()
            finally:
                queues.discard(queue)

        await StreamingResponse(body(), media_type="text/event-stream")(scope, receive, send)

    async def tick(what: str, rate: float, seconds: float) -> None:
        n = 0
        deadline = time.time() + seconds
        while time.time() < deadline:
            n += 1
            if what == "events":
                if kind == "runtime":
                    await rt.create_worker(worker_id=f"tick-{n}-{time.time_ns()}")
                else:
                    stamp = (
                        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9 // 1000:06d}Z"
                    )
                    frame = b'id: %d\nevent: worker_created\ndata: {"created_at":"%s"}\n\n' % (n, stamp.encode())
                    for queue in queues:
                        queue.put_nowait(frame)
            elif kind == "runtime":
                pieces.put_nowait(f"sent={time.time():.6f};")
            else:
                data = b'{"kind":"output_delta","text":"sent=%.6f;"}' % time.time()
                for queue in queues:
                    queue.put_nowait(b"event: output_delta\ndata: %s\n\n" % data)
            await asyncio.sleep(  # noqa: TID251
                1 / rate
            )

    async def control(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/bench/rss":
            body = str(_rss(os.getpid())).encode()
        elif path == "/bench/tick":
            q = dict(p.split("=") for p in scope["query_string"].decode().split("&"))
            asyncio.get_running_loop().create_task(tick(q["what"], float(q["rate"]), float(q["seconds"])))
            body = b"ok"
        elif path == "/bench/begin":  # a run with an open entry for the delta figures
            await rt.create_worker(worker_id="writer-w", profile={"kind": "named", "name": "writer"})
            await rt.send_input("writer-w", "go")
            body = b"ok"
        else:
            body = b"?"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    async def router(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            await control(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/bare/stream":
            await bare(scope, receive, send)
        else:
            await app(scope, receive, send)

    async def main() -> None:
        await rt.start()
        for n in range(events - 1):  # runtime_started is the first
            await rt.create_worker(worker_id=f"w{n}")
        if kind == "bare":
            after = 0
            while True:
                page = await rt.read_stream(after, 1000)
                for e in page.events:
                    frames.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (e.id, e.kind.encode(), _encode(e)))
                after = page.next_after
                if not page.has_more:
                    break
        config = uvicorn.Config(
            router, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **UVICORN_OPTIONS
        )
        server = uvicorn.Server(config)
        print("ready", flush=True)
        await server.serve()

    _ = anyio
    asyncio.run(main())


def _encode(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- the client --------------------------------------------------------------------------------------------------


class Server:
    def __init__(self, kind: str, port: int, events: int) -> None:
        self.kind, self.port = kind, port
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(port), "--events", str(events)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # uvicorn binds right after the line (a benchmark, not a test: no readiness probe here)

    def path(self, query: str) -> str:
        if self.kind == "bare":
            return "/bare/stream?" + query
        return "/v1/events/stream?" + query

    async def get(self, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data.split(b"\r\n\r\n", 1)[1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # uvicorn waits for the bare route's open streams
            self.process.kill()
            self.process.wait(5)


async def open_stream(server: Server, query: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET {server.path(query)} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def count_frames(server: Server, query: str, count: int) -> None:
    reader, writer = await open_stream(server, query)
    seen = 0
    tail = b""
    while seen < count:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        data = tail + chunk
        seen += data.count(b"\n\n") - tail.count(b"\n\n")
        tail = data[-1:]
    writer.close()


async def replay(server: Server, events: int, streams: int, total: int) -> float:
    """`streams` streams at once, each reading the newest `events` of the `total` durable events."""
    query = f"n={events}" if server.kind == "bare" else f"after={total - events}"
    started = time.perf_counter()
    await asyncio.gather(*(count_frames(server, query, events) for _ in range(streams)))
    return streams * events / (time.perf_counter() - started)


async def idle_memory(server: Server, idle: int) -> float:
    before = int(await server.get("/bench/rss"))
    opened = [await open_stream(server, "live=1") for _ in range(idle)]
    for reader, _ in opened[-10:]:
        await reader.readuntil(b"\r\n\r\n")  # the headers: the streams are open
    await asyncio.sleep(  # noqa: TID251
        1
    )
    after = int(await server.get("/bench/rss"))
    for _, writer in opened:
        writer.close()
    return (after - before) / idle


def _parse_time(stamp: bytes) -> float:
    import datetime as dt

    return dt.datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def read_live(port: int, path: str, streams: int, what: str, seconds: float) -> None:
    """A reader process (``--read``): `streams` raw sockets on `path`, a selector loop that does nothing but ``recv``
    and note the time (``time.time``, the clock the server stamps with, shared by processes on one machine) until
    `seconds` after the first frame; then the frames are parsed and each latency printed, one per line, after a
    ``frames`` line with the frame count of every stream."""
    import selectors

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(streams):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:  # the headers: the stream is open
            head += sock.recv(1 << 16)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, len(socks))
        socks.append(sock)
    print("ready", flush=True)
    chunks: list[list[tuple[float, bytes]]] = [[] for _ in socks]
    deadline = float("inf")
    clock = time.time
    give_up = clock() + seconds + 10  # no frame at all: the figure says so (0 frames)
    while (now := clock()) < min(deadline, give_up):
        for key, _ in selector.select(min(1.0, deadline - now, give_up - now)):
            data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
            if data:
                chunks[key.data].append((clock(), data))
                if deadline == float("inf"):
                    deadline = clock() + seconds + 0.5
            else:
                selector.unregister(key.fileobj)
    for sock in socks:
        sock.close()
    pattern = _SENT if what == "deltas" else _CREATED
    latencies: list[float] = []
    counts: list[int] = []
    for received in chunks:
        buffer, n = b"", 0
        for at, data in received:  # a frame counts at the time its end arrived
            buffer += data
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                for found in pattern.finditer(frame):  # a coalesced delta names each of its pieces' times
                    sent = float(found.group(1)) if what == "deltas" else _parse_time(found.group(1))
                    latencies.append(at - sent)
                    n += 1
        counts.append(n)
    print("frames " + " ".join(map(str, counts)))
    print("\n".join(f"{x:.6f}" for x in latencies), flush=True)


def _start_readers(
    server: Server, path: str, streams: int, what: str, seconds: float, readers: int
) -> list[subprocess.Popen[str]]:
    """`readers` reader processes (``--read``), each with its share of `streams`, once all of them are ready."""
    shares = [streams // readers + (1 if n < streams % readers else 0) for n in range(readers)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--read", what, "--port", str(server.port), "--path", path]
            + ["--streams", str(share), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    return procs


async def live_latency(
    server: Server, streams: int, what: str, seconds: float, readers: int
) -> tuple[float, float, int, int]:
    """p50 and p99 latency, frames in all, and the streams that got fewer frames than the most any got, read by
    `readers` reader processes (each its share of the streams) so that the reading side is not what is measured."""
    query = "live=1" if server.kind == "bare" else ("deltas=true" if what == "deltas" else "")
    procs = _start_readers(server, server.path(query), streams, what, seconds, readers)
    await server.get(f"/bench/tick?what={what}&rate=10&seconds={seconds}")
    samples: list[float] = []
    counts: list[int] = []
    for proc in procs:
        out, _ = await asyncio.to_thread(proc.communicate)
        lines = out.split("\n")
        counts += [int(c) for c in lines[0].split()[1:]]
        samples += [float(line) for line in lines[1:] if line]
    samples.sort()
    behind = sum(1 for c in counts if c < max(counts, default=0))
    if not samples:
        return float("nan"), float("nan"), 0, behind
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(samples), behind


async def measure(kind: str, port: int, args: argparse.Namespace) -> dict[str, float]:
    server = Server(kind, port, args.events)
    try:
        out: dict[str, float] = {}
        out["replay frames/s"] = await replay(server, args.events, 1, args.events)
        out["throughput frames/s (10 streams)"] = await replay(server, args.events // 10, 10, args.events)
        out["bytes per idle stream"] = await idle_memory(server, args.idle)
        p50, p99, n, behind = await live_latency(server, args.fanout, "events", args.seconds, args.readers)
        out["fan-out p50 ms"], out["fan-out p99 ms"], out["fan-out frames"] = p50 * 1000, p99 * 1000, n
        out["fan-out streams behind"] = behind
        if kind == "runtime":
            await server.get("/bench/begin")
        p50, p99, n, behind = await live_latency(server, 100, "deltas", args.seconds, args.readers)
        out["delta p50 ms"], out["delta p99 ms"], out["delta frames"] = p50 * 1000, p99 * 1000, n
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["runtime", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--read", choices=["events", "deltas"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--readers", type=int, default=2, help="reader processes for the live figures, each its share (default 2)"
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=100_000, help="durable events replayed (default 100,000)")
    parser.add_argument("--idle", type=int, default=1000, help="idle streams for the memory figure (default 1,000)")
    parser.add_argument("--fanout", type=int, default=1000, help="open streams for the fan-out figure (default 1,000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of live events per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="10,000 events, 200 streams, 2 s")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.events)
        return
    if args.read:
        read_live(args.port, args.path, args.streams, args.read, args.seconds)
        return
    if args.quick:
        args.events, args.idle, args.fanout, args.seconds = 10_000, 200, 200, 2.0
    results = {}
    for kind in ("bare", "runtime"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results[kind] = asyncio.run(measure(kind, port, args))
    print(f"{'figure':36} {'bare':>12} {'runtime':>12} {'runtime/bare':>13}")
    for name in results["bare"]:
        bare, ours = results["bare"][name], results["runtime"][name]
        ratio = ours / bare if bare else float("nan")
        print(f"{name:36} {bare:12.1f} {ours:12.1f} {ratio:13.2f}")
    shown = {"events": args.events, "idle": args.idle, "fanout": args.fanout, "seconds": args.seconds}
    print(json.dumps(shown | {"readers": args.readers}))


if __name__ == "__main__":
    main()
