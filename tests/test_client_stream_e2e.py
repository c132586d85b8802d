"""The client's event stream against the real route: `follow_run` and `stream_events` through real processes over
TCP, and a Runtime restarted (fs store, same port) while a client streams: no durable event lost or repeated."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from e2e_helpers import runtime_process

from worker_runtime_client import (
    EntryDone,
    RetryPolicy,
    RunDone,
    RuntimeClient,
    RuntimeStartedEvent,
    RuntimeStoppingEvent,
    TextDelta,
    TranscriptAppendedEvent,
)

# The route comes with the http package's stream module; until it is there, these wait for it.
pytest.importorskip("worker_runtime_http.stream", reason="GET /v1/events/stream is not in this checkout yet")

TOKEN = "e2e-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_follow_run_shows_a_runs_text_from_the_real_route(tmp_path: Path) -> None:
    args = ["--store", "memory", "--token", TOKEN]
    async with runtime_process(args, tmp_path) as url, RuntimeClient(url, token=TOKEN) as rt:
        wid = (await rt.create_worker()).worker_ref.worker_id
        ack = await rt.send_input(wid, "grüße 🌍")
        items = []
        with anyio.fail_after(30):  # a bound against a hang, not a wait
            async with rt.follow_run(wid, ack.run_id) as follow:
                items = [item async for item in follow]
        text = "".join(i.text for i in items if isinstance(i, TextDelta))
        done = [i for i in items if isinstance(i, EntryDone)]
        assert isinstance(items[-1], RunDone) and items[-1].run.status == "completed"
        assert [d.entry.content for d in done] == [text] and text
        # a second follow of the same (ended) run shows the same, from its state and transcript
        async with rt.follow_run(wid, ack.run_id) as again:
            assert [i async for i in again] == items


async def test_a_stream_resumes_across_a_runtime_restart_with_no_event_lost_or_repeated(tmp_path: Path) -> None:
    port = _free_port()
    args = ["--store", "fs", "--store-path", str(tmp_path / "store"), "--token", TOKEN, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    got: list[Any] = []
    stopping_seen = anyio.Event()
    restarted_seen = anyio.Event()
    wanted = anyio.Event()
    want = {"n": 0}

    async def read(stream: Any) -> None:
        async for item in stream:
            got.append(item)
            if isinstance(item, RuntimeStoppingEvent):
                stopping_seen.set()
            if isinstance(item, RuntimeStartedEvent) and stopping_seen.is_set():
                restarted_seen.set()
            if want["n"] and sum(isinstance(i, TranscriptAppendedEvent) for i in got) >= want["n"]:
                wanted.set()
                return

    retries = RetryPolicy(attempts=4, backoff_s=0.05, max_backoff_s=0.5)
    async with RuntimeClient(url, token=TOKEN, retries=retries) as watcher:
        with anyio.fail_after(60):  # a bound against a hang, not a wait
            async with anyio.create_task_group() as tg:
                async with runtime_process(args, tmp_path) as first, RuntimeClient(first, token=TOKEN) as rt:
                    wid = (await rt.create_worker(worker_id="w1")).worker_ref.worker_id
                    for k in range(3):
                        await rt.wait_for_run(wid, (await rt.send_input(wid, f"before {k}")).run_id)
                    stream = watcher.stream_events(after=0)
                    await stream.__aenter__()
                    tg.start_soon(read, stream)
                await stopping_seen.wait()  # SIGTERM sent by leaving the process: the stream saw it stop
                async with runtime_process(args, tmp_path), RuntimeClient(url, token=TOKEN) as rt:
                    await restarted_seen.wait()
                    want["n"] = 6
                    for k in range(3):
                        await rt.wait_for_run("w1", (await rt.send_input("w1", f"after {k}")).run_id)
                    await wanted.wait()
                    await stream.aclose()
    durable = [i.id for i in got if i.id]
    assert durable == list(range(1, len(durable) + 1))  # every id once, in order, across the restart
    assert stream.reconnects >= 1
    contents = [i.entry.content for i in got if isinstance(i, TranscriptAppendedEvent) and i.entry]
    assert len(contents) == 6


async def test_follow_run_shows_a_commands_output_as_it_is_printed(tmp_path: Path) -> None:
    gate = tmp_path / "go-on"
    program = (
        "import os, sys, time\n"
        "sys.stdout.buffer.write('Grüße '.encode()); sys.stdout.flush()\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"  # the child waits; the test does not
        "sys.stdout.buffer.write('🌍 wörld ✓'.encode()); sys.stdout.flush()\n"
    )
    script = tmp_path / "printer.py"
    script.write_text(program, encoding="utf-8")
    config = tmp_path / "runtime.toml"
    argv = json.dumps([sys.executable, str(script)])  # a JSON array of strings is a TOML array too
    config.write_text(f'[profiles.printer]\nengine = "command"\nargv = {argv}\n')
    args = ["--store", "memory", "--token", TOKEN, "--config", str(config)]
    async with runtime_process(args, tmp_path) as url, RuntimeClient(url, token=TOKEN) as rt:
        wid = (await rt.create_worker(profile={"kind": "named", "name": "printer"})).worker_ref.worker_id
        ack = await rt.send_input(wid, "go")
        items = []
        with anyio.fail_after(30):  # a bound against a hang, not a wait
            async with rt.follow_run(wid, ack.run_id) as follow:
                async for item in follow:
                    items.append(item)
                    if isinstance(item, TextDelta) and not gate.exists():
                        gate.touch()  # the first text was shown while the program still ran: let it finish
    deltas = [i for i in items if isinstance(i, TextDelta)]
    done = [i for i in items if isinstance(i, EntryDone)]
    assert deltas[0].text.startswith("Grü") and len(deltas) >= 2  # shown in pieces, as printed
    assert "".join(d.text for d in deltas) == done[0].entry.content == "Grüße 🌍 wörld ✓"
    assert isinstance(items[-1], RunDone) and items[-1].run.status == "completed"
