"""The client's event stream over real TCP: a small SSE server on 127.0.0.1 that speaks the stream's frame format
stops (sending ``runtime_stopping``), is gone for a while, and comes back on the same port; the client reads on
from its cursor with no event lost or repeated.

uvicorn serves on asyncio, so this runs on asyncio only. The injected sleep of the stream is where the test stops
and restarts the server: it is called before each reconnect, so no test step waits on time.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
import uvicorn
from client_helpers import runtime_body
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from stream_helpers import event, frame

from worker_runtime_client import EventStream, RetryPolicy, RuntimeClient, RuntimeStoppingEvent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Server(uvicorn.Server):
    def __init__(self, app: Starlette) -> None:
        super().__init__(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.ready = anyio.Event()
        self.done = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def run_on(self, sock: socket.socket) -> None:
        try:
            await self.serve(sockets=[sock])
        finally:
            self.done.set()


def _app(log: list[dict[str, Any]], seen: list[str | None], *, stopping_after: int | None) -> Starlette:
    """A stream of `log` from the request's cursor. With `stopping_after`, the first connection sends that many
    events and a `runtime_stopping` and ends, and every later one is 503 (a Runtime shutting down)."""

    async def stream(request: Request) -> Response:
        header = request.headers.get("last-event-id")
        seen.append(header)
        if stopping_after is not None and len(seen) > 1:
            error = {"code": "runtime_unavailable", "message": "stopping", "details": {}, "retryable": True}
            return JSONResponse({"error": error}, status_code=503)
        cursor = int(header) if header is not None else int(request.query_params.get("after", "0"))

        async def body() -> Any:
            if stopping_after is not None:
                for e in log[cursor:stopping_after]:
                    yield frame(e)
                yield frame(event(stopping_after + 1, "runtime_stopping", worker_ref=None, data={}))
                return
            for e in log[cursor:]:
                yield frame(e)
            await anyio.sleep_forever()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def runtime(request: Request) -> Response:
        return JSONResponse(runtime_body())

    return Starlette(routes=[Route("/v1/events/stream", stream), Route("/v1/runtime", runtime)])


def _socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def test_a_stream_resumes_from_its_cursor_across_a_server_restart_on_real_tcp() -> None:
    before = [event(i) for i in range(1, 6)]
    after = [*before, event(6, "runtime_stopping", worker_ref=None, data={})]
    after += [event(i) for i in range(7, 10)]
    seen_first: list[str | None] = []
    seen_second: list[str | None] = []
    first = _Server(_app(before, seen_first, stopping_after=5))
    second = _Server(_app(after, seen_second, stopping_after=None))
    sock = _socket()
    port = sock.getsockname()[1]
    sleeps: list[float] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run_on, sock)
        with anyio.fail_after(30):
            await first.ready.wait()

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:  # the stopping server refused once: it goes away now
                first.should_exit = True
                await first.done.wait()
            elif len(sleeps) == 3:  # the port refused a connection: the server comes back on it
                tg.start_soon(second.run_on, _socket(port))
                await second.ready.wait()

        retries = RetryPolicy(attempts=1, backoff_s=0.05, max_backoff_s=0.2)
        async with RuntimeClient(f"http://127.0.0.1:{port}", retries=retries) as rt:
            ids = []
            with anyio.fail_after(30):  # a bound against a hang, not a wait
                async with EventStream(rt, 0, sleep=sleep) as stream:
                    async for item in stream:
                        ids.append((item.id, isinstance(item, RuntimeStoppingEvent)))
                        if len(ids) == 9:
                            break
        second.should_exit = True

    assert ids == [(i, i == 6) for i in range(1, 10)]  # every event once, in order, across the restart
    assert seen_first == [None, "6"]  # the first stream from `after`, then a reconnect refused with 503
    assert seen_second == ["6"]  # the restarted server was asked from the cursor
    assert len(sleeps) == 3 and all(0 <= s <= 0.2 for s in sleeps)
    assert stream.reconnects == 1 and stream.cursor == 9
