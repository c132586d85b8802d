"""Generate a Python client from the served OpenAPI document and drive a real server with it (never a test).

    python tools/check_generated_client.py [--keep DIR]

Needs an environment with ``openapi-python-client`` at `GENERATOR_VERSION` and the server's packages (core,
store-fs, http): Hatch's ``gen-client`` environment, run by ``hatch run test``. The generated code needs httpx,
attrs and python-dateutil, which that environment has.

1. Serves a Runtime (memory store, a token) with uvicorn on a free port of 127.0.0.1, in a thread, and takes
   the document it serves at ``GET /openapi.json``.
2. Runs the generator on it into a temporary directory and fails on any warning, on a skipped operation (every
   ``operationId`` must have its module) and on a package named like ours (``worker_runtime_client``).
3. Imports the generated package and, through it, against that server: reads the runtime summary, creates a
   Worker, sends input, long-polls the events until the run has completed, reads the transcript and the events
   (their data parsed per kind), and reads an error (404) as the error envelope.
4. Exits 1 with a message naming what failed, or 0 with a one-line summary.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

#: The openapi-python-client release this check is pinned to (its warnings and naming differ between releases).
GENERATOR_VERSION = "0.29.1"
TOKEN = "check-generated-client"
#: Our own client's package name: a generated package must not take it.
OUR_CLIENT = "worker_runtime_client"


class CheckFailed(Exception):
    """What the check found wrong, in one message."""


def _check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- 1. a real server ----------------------------------------------------------------------------------------


@contextmanager
def serving() -> Iterator[str]:
    """A Runtime process's app on uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    from worker_runtime_core import Runtime
    from worker_runtime_http import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(Runtime(runtime_id="rt-gen-check"), token=TOKEN, bind=("127.0.0.1", port), shutdown_grace_s=0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            _check(thread.is_alive(), "the server thread ended before it started serving")
            _check(time.monotonic() < deadline, "the server did not start within 20 s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def served_document(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/openapi.json", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    _check(response.status_code == 200, f"GET /openapi.json answered {response.status_code}: {response.text[:200]}")
    document: dict[str, Any] = response.json()
    return document


# --- 2. the generator ----------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def generate(document: dict[str, Any], workdir: Path) -> tuple[str, Path]:
    """Run the generator; returns the generated package's name and the directory to import it from."""
    try:
        installed = importlib.metadata.version("openapi-python-client")
    except importlib.metadata.PackageNotFoundError:
        raise CheckFailed(f"openapi-python-client is not installed (pip install openapi-python-client=="
                          f"{GENERATOR_VERSION})") from None  # fmt: skip
    _check(
        installed == GENERATOR_VERSION,
        f"openapi-python-client {installed} is installed; this check is pinned to {GENERATOR_VERSION}",
    )
    spec = workdir / "openapi.json"
    spec.write_text(json.dumps(document))
    config = workdir / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no ruff run over the output: not what is checked
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec), "--meta", "none",
               "--config", str(config), "--fail-on-warning"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=300)
    output = (done.stdout + done.stderr).strip()
    _check(done.returncode == 0, f"the generator failed (exit {done.returncode}):\n{output}")
    _check(not re.search(r"warning|error|unable|skipp", output, re.IGNORECASE), f"the generator warned:\n{output}")
    made_dirs = [p for p in workdir.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    _check(len(made_dirs) == 1, f"the generator wrote {len(made_dirs)} packages, not one:\n{output}")
    out = made_dirs[0]  # named by the generator from the document's title, as a user gets it
    _check(out.name != OUR_CLIENT, f"the title {document['info']['title']!r} makes the package {OUR_CLIENT!r}")
    expected = {_snake(op["operationId"]) for ops in document["paths"].values() for op in ops.values()}
    made = {p.stem for p in (out / "api").rglob("*.py") if p.stem != "__init__"}
    _check(made == expected, f"operations not generated: {sorted(expected - made)}; others: {sorted(made - expected)}")
    return out.name, workdir


# --- 3. the generated client against the server ----------------------------------------------------------------


def _load(package: str, where: Path) -> dict[str, ModuleType]:
    sys.path.insert(0, str(where))
    operations = ("get_runtime", "create_worker", "send_input", "read_events", "read_transcript", "get_worker")
    modules = {name: importlib.import_module(f"{package}.api.default.{name}") for name in operations}
    modules["package"] = importlib.import_module(package)
    modules["models"] = importlib.import_module(f"{package}.models")
    return modules


def _ok(response: Any, status: int, what: str) -> Any:
    _check(
        response.status_code == status,
        f"{what}: HTTP {int(response.status_code)}, expected {status}: {response.content[:300]!r}",
    )
    _check(response.parsed is not None, f"{what}: the generated client parsed no body")
    return response.parsed


def drive(modules: dict[str, ModuleType], base_url: str) -> str:
    """Create a Worker, send input, wait for its run, read transcript and events: all through the generated code."""
    m = modules["models"]
    with modules["package"].AuthenticatedClient(base_url=base_url, token=TOKEN) as client:
        runtime = _ok(modules["get_runtime"].sync_detailed(client=client), 200, "GET /v1/runtime").runtime
        _check(runtime.runtime_id == "rt-gen-check", f"runtime_id is {runtime.runtime_id!r}")
        _check(runtime.limits.max_page == 1000, f"limits.max_page is {runtime.limits.max_page!r}")

        body = m.CreateWorkerRequest(
            worker_id="w-gen", intent=m.TaskIntent(kind=m.TaskIntentKind.TASK, objective="say it back")
        )
        worker = _ok(modules["create_worker"].sync_detailed(client=client, body=body), 201, "POST /v1/workers").worker
        _check(worker.worker_ref.worker_id == "w-gen", f"created {worker.worker_ref.worker_id!r}")
        _check(isinstance(worker.intent, m.TaskIntent), f"intent came back as {type(worker.intent).__name__}")
        _check(worker.profile == "default" and worker.transcript_len == 0, f"a new worker reads {worker!r}")
        plain = _ok(modules["create_worker"].sync_detailed(client=client, body=m.CreateWorkerRequest()), 201,
                    "POST /v1/workers with an empty body").worker  # fmt: skip
        _check(isinstance(plain.intent, m.AssistantIntent) and plain.intent.purpose is None,
               f"the default intent came back as {plain.intent!r}")  # fmt: skip

        ack = _ok(
            modules["send_input"].sync_detailed("w-gen", client=client, body=m.InputRequest(content="hello")),
            202,
            "POST /v1/workers/w-gen/input",
        ).ack
        _check(ack.input_sequence == 0 and ack.duplicate is False, f"the ack reads {ack!r}")

        cursor, finished, deadline = 0, False, time.monotonic() + 20
        while not finished:
            _check(time.monotonic() < deadline, f"run {ack.run_id} did not complete within 20 s")
            page = _ok(
                modules["read_events"].sync_detailed(client=client, after=cursor, worker_id="w-gen", wait=5.0),
                200,
                "GET /v1/events",
            )
            cursor = page.next_after
            for event in page.events:
                if event.run_id == ack.run_id and _kind(event.kind) == "run_completed":
                    _check(isinstance(event.data, m.RunEventData), f"run_completed data is {event.data!r}")
                    _check(_kind(event.data.run.status) == "completed", f"the run reads {event.data.run!r}")
                    finished = True

        transcript = _ok(
            modules["read_transcript"].sync_detailed("w-gen", client=client), 200, "GET /v1/workers/w-gen/transcript"
        ).transcript
        got = [(_kind(item.role), item.content) for item in transcript.items]
        _check(got == [("user", "hello"), ("assistant", "hello")], f"the transcript reads {got}")
        _check(transcript.next_start is None and transcript.total_items == 2, f"the page reads {transcript!r}")

        events = _ok(modules["read_events"].sync_detailed(client=client, worker_id="w-gen"), 200, "GET /v1/events")
        kinds = [_kind(e.kind) for e in events.events]
        _check(kinds[:2] == ["worker_created", "input_accepted"] and "run_completed" in kinds, f"events: {kinds}")
        accepted = events.events[1].data
        _check(isinstance(accepted, m.InputAcceptedEventData) and accepted.input_sequence == 0,
               f"input_accepted data is {accepted!r}")  # fmt: skip
        _check(isinstance(events.events[0].created_at, datetime.datetime), "created_at is no datetime")

        missing = modules["get_worker"].sync_detailed("w-none", client=client)
        _check(missing.status_code == 404 and isinstance(missing.parsed, m.ErrorEnvelope),
               f"GET /v1/workers/w-none: {int(missing.status_code)} {missing.content[:200]!r}")  # fmt: skip
        _check(missing.parsed.error.code == "worker_not_found", f"the error reads {missing.parsed.error!r}")
    return f"{len(events.events)} events, {len(transcript.items)} transcript entries"


def _kind(value: Any) -> str:
    """An open enum's value as a string (the generator gives a known one as an Enum member, another as a str)."""
    return str(getattr(value, "value", value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", metavar="DIR", help="also copy the generated package to DIR")
    args = parser.parse_args(argv)
    try:
        with serving() as base_url, tempfile.TemporaryDirectory(prefix="gen-client-") as tmp:
            document = served_document(base_url)
            package, where = generate(document, Path(tmp))
            if args.keep:
                shutil.copytree(where / package, Path(args.keep) / package, dirs_exist_ok=True)
            summary = drive(_load(package, where), base_url)
            operations = sum(len(ops) for ops in document["paths"].values())
    except CheckFailed as exc:
        print(f"check_generated_client: FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"check_generated_client: ok: openapi-python-client {GENERATOR_VERSION} generated all {operations} "
        f"operations with no warning; create, input, events and transcript worked ({summary})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
