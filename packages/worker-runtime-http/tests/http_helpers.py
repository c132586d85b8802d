"""Helpers of the HTTP tests: an app over a started Runtime, a `gate` engine the test releases, a child process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
from anyio.streams.text import TextReceiveStream
from core_helpers import Gate  # the gate engine the core tests use: runs wait until the test releases them

from worker_runtime_core import Engine, Limits, ProfileConfig, RunContext, Runtime
from worker_runtime_http import create_app

TOKEN = "s3cret-token"
BASE_URL = "http://127.0.0.1:8787"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class Boom(Engine):
    """An engine whose runs fail; used to produce diagnostics."""

    name = "boom"

    async def run(self, ctx: RunContext) -> None:
        raise RuntimeError("boom")


def make_runtime(gate: Gate, *, limits: Limits | None = None, **kwargs: Any) -> Runtime:
    return Runtime(
        runtime_id="rt-test",
        display_name="Test",
        limits=limits,
        profiles={"gate": ProfileConfig("gate"), "boom": ProfileConfig("boom")},
        engines={"gate": gate.engine(), "boom": Boom},
        **kwargs,
    )


def client_for(app: Any, *, token: str | None = TOKEN, base_url: str = BASE_URL) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, headers=headers)


@asynccontextmanager
async def serving(
    gate: Gate, *, limits: Limits | None = None, token: str | None = TOKEN, **app_kwargs: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A started Runtime, its app (bound to 127.0.0.1:8787) and a client with the token."""
    app_kwargs.setdefault("bind", ("127.0.0.1", 8787))
    async with make_runtime(gate, limits=limits) as rt:
        app = create_app(rt, token=token, allow_unauthenticated=token is None, **app_kwargs)
        async with client_for(app, token=token) as client:
            yield rt, client


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an error envelope (asserting that the body is exactly that envelope)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "retryable"}, body
    return body["error"]  # type: ignore[no-any-return]


# --- the real process ----------------------------------------------------------------------------------------

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    """A ``python -m worker_runtime_http serve`` child: its stderr lines, collected as they come."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = anyio.Event()
        self.base_url = ""

    async def _collect(self) -> None:
        assert self.process.stderr is not None
        buffer = ""
        async for text in TextReceiveStream(self.process.stderr):
            buffer += text
            *complete, buffer = buffer.split("\n")
            self.lines.extend(complete)
            self._changed.set()
            self._changed = anyio.Event()
        if buffer:
            self.lines.append(buffer)
        self._changed.set()

    async def wait_for_line(self, pattern: str, within: float = 20) -> re.Match[str]:
        """The first stderr line matching `pattern`, waiting for it at most `within` seconds."""
        regex = re.compile(pattern)
        with anyio.fail_after(within):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                if self.process.returncode is not None and not self._changed.is_set():
                    raise AssertionError(f"process exited; no line matches {pattern!r}:\n" + "\n".join(self.lines))
                await self._changed.wait()

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self, within: float = 20) -> int:
        with anyio.fail_after(within):
            return await self.process.wait()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def server_process(args: Sequence[str], *, cwd: Path | None = None) -> AsyncIterator[ServerProcess]:
    """Start ``python -m worker_runtime_http serve ARGS`` and collect its stderr; killed at exit if still running."""
    process = await anyio.open_process(
        [sys.executable, "-m", "worker_runtime_http", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=cwd,
    )
    server = ServerProcess(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._collect)
            try:
                yield server
            finally:
                if process.returncode is None:
                    process.kill()
                with anyio.move_on_after(10, shield=True):
                    await process.wait()
    finally:
        await process.aclose()


async def started(server: ServerProcess) -> str:
    """Wait for the ``listening on`` line and return the base URL it names."""
    found = await server.wait_for_line(LISTENING.pattern)
    server.base_url = found.group(1)
    return server.base_url


async def call_asgi(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: Any
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """Drive `app` with raw ASGI messages: the body comes from the iterable `chunks` one message at a time.

    Returns status, headers, body and how many chunks the app asked for.
    """
    pulled = 0
    source = iter(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8787"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
    }
    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"], pulled
