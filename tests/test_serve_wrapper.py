"""`tools/serve`, the exec form of `hatch run serve` for process managers: SIGTERM stops it with exit status 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from http_helpers import ServerProcess, started

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test only drives a child process; one backend is enough


async def test_tools_serve_execs_the_server_and_sigterm_exits_0(tmp_path: Path) -> None:
    assert shutil.which("hatch"), "the test command runs under hatch, which must be on PATH"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HATCH_ENV_ACTIVE", "VIRTUAL_ENV"))}
    process = await anyio.open_process(
        [str(ROOT / "tools" / "serve"), "--port", "0", "--store", "memory"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    server = ServerProcess(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(server._collect)
        try:
            base_url = await started(server)
            async with httpx.AsyncClient(base_url=base_url) as client:
                assert (await client.get("/healthz")).json() == {"status": "ok"}
            server.signal(signal.SIGTERM)  # sent to the wrapper's pid: after exec, that is the server itself
            assert await server.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
    assert any("store closed" in line for line in server.lines), server.lines
