"""The HTTP README's walkthrough of a run that asks and of the busy strategies runs as written: each `curl` in it
is sent to a Runtime process's app, in order, and each answer has what the README's comment after it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import anyio
import httpx

from worker_runtime_core import Runtime
from worker_runtime_http import create_app

README = Path(__file__).resolve().parents[1] / "packages" / "worker-runtime-http" / "README.md"
#: What a comment shows of an answer: `"key":value` pairs and quoted strings (`{...}` and prose are left out).
SHOWN = re.compile(r'"[^"]*"(?::(?:"[^"]*"|\[(?:"[^"]*",?)*\]|true|false|null|-?\d+))?')


def _steps() -> list[tuple[list[str], str]]:
    """The walkthrough's curl commands, each with the comments that follow it."""
    text = README.read_text()
    start = text.index("A run that asks waits for an answer")
    end = text.index("* **Answers.**", start)
    steps: list[tuple[list[str], str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text[start:end], re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("curl "):
                command, _, comment = line.partition("  # ")
                steps.append((shlex.split(command), comment))
            elif line.startswith("# ") and steps:
                steps[-1] = (steps[-1][0], steps[-1][1] + " " + line[2:])
    return steps


def _request(argv: list[str]) -> tuple[str, str, str | None]:
    method, url, body = "GET", "", None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-d":
            body = next(args)
        elif arg == "-H":
            next(args)
        elif arg.startswith("localhost:8787"):
            url = arg.removeprefix("localhost:8787")
    return method, url, body


async def test_the_ask_and_busy_strategies_walkthrough_runs_as_written() -> None:
    steps = _steps()
    assert len(steps) == 12 and any("enqueue" in " ".join(a) for a, _ in steps)
    async with Runtime() as rt:
        app = create_app(rt, allow_unauthenticated=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8787") as http:
            for argv, comment in steps:
                method, url, body = _request(argv)
                shown = SHOWN.findall(comment)
                with anyio.fail_after(10):
                    while True:  # a GET may come before what it shows (a run that starts after an answer)
                        signal = rt.event_signal()
                        headers = {"content-type": "application/json"} if body is not None else {}
                        answer = await http.request(method, url, content=body, headers=headers)
                        assert answer.status_code < 300, (argv, answer.text)
                        missing = [s for s in shown if s not in answer.text]
                        if not missing or method != "GET":
                            break
                        await signal.wait()
                assert missing == [], (argv, answer.text)
