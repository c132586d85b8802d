"""Helpers of the cross-package tests: run a real `worker-runtime-http` process on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def profiles_toml(path: Path) -> Path:
    """A config file with a `slow` command profile (a run that only ends when cancelled)."""
    argv = ", ".join(f'"{part}"' for part in SLEEPER)
    path.write_text(f'[profiles.slow]\nengine = "command"\nargv = [{argv}]\nkill_grace_s = 1\n')
    return path


@asynccontextmanager
async def runtime_process(args: Sequence[str], cwd: Path) -> AsyncIterator[str]:
    """Start ``python -m worker_runtime_http serve --port 0 ...``; yield its base URL; SIGTERM it at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    process = await anyio.open_process(
        [sys.executable, "-m", "worker_runtime_http", "serve", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        buffer = b""
        with anyio.fail_after(30):
            url = None
            while url is None:
                chunk = await process.stderr.receive()
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                for line in done:
                    lines.append(line.decode(errors="replace"))
                    found = re.search(r"listening on (http://\S+)", lines[-1])
                    if found:
                        url = found.group(1)

        async def drain() -> None:
            assert process.stderr is not None
            async for _ in process.stderr:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            yield url
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                code = await process.wait()
            assert code == 0, f"exit code {code}"
            tg.cancel_scope.cancel()
    except BaseException:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        raise
    finally:
        await process.aclose()
