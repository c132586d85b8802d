"""Helpers of the fault tests: the real `worker-runtime-http serve` process on 127.0.0.1, over a store on a file
system the test controls (a small tmpfs, a read-only bind mount), with faults injected from outside (a filler file,
strace's syscall fault injection, SIGKILL).

Everything here is synchronous (threads and `subprocess`), so a test runs once, not under each async backend.
Mounts need root (or CAP_SYS_ADMIN) and strace needs ptrace: when they are missing a test is skipped with the
reason, and fails instead under ``CI=true``, where `.ci/run` installs what they need.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

__all__ = [
    "Ack",
    "Feeder",
    "Server",
    "Strace",
    "check_acknowledged",
    "events",
    "read_only",
    "serve",
    "tmpfs",
    "transcript",
    "unavailable",
    "wait_until",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TERMINAL_EVENTS = frozenset({"run_completed", "run_cancelled", "run_failed", "run_timed_out", "run_interrupted"})
DEADLINE_S = 30.0  # every wait below is bounded by this; none is a measure of time


def unavailable(reason: str) -> NoReturn:
    """Skip the test for a missing tool or privilege; under CI fail it (CI must run every fault test)."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}", pytrace=False)
        time.sleep(0.01)  # a polling interval, not a synchronisation


# --- mounts --------------------------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    if shutil.which("mount") is None:
        unavailable("no `mount` command")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip() or done.returncode} (needs root)")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it now, free it later


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (``2m``) mounted at `path` (created) for the block; unmounted after, also on failure."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` (a directory or a file) read-only for the block, through a read-only bind mount over itself:
    root's permission checks ignore a chmod, not a read-only mount."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


# --- the process ---------------------------------------------------------------------------------------------


class Server:
    """``python -m worker_runtime_http serve --host 127.0.0.1 --port 0 --store fs --store-path STORE ...``.

    `start` returns once the process logs ``listening on``; `stderr` keeps every line it wrote.
    """

    def __init__(self, store: Path, *args: str, cwd: Path | None = None) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "worker_runtime_http",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            "fs",
            "--store-path",
            str(store),
            *args,
        ]
        self.cwd = cwd if cwd is not None else store.parent
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
        self.lines = []
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr}", pytrace=False)
            return bool(self.url)

        wait_until(ready, "the server listens")
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=DEADLINE_S)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self._wait()

    def kill(self) -> None:
        """SIGKILL, then wait; then SIGKILL what it had started (the programs of `command` runs), which a crash
        leaves running and nobody would end."""
        assert self.process is not None
        orphans = _descendants(self.process.pid)
        self.process.kill()
        self._wait()
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _wait(self) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=DEADLINE_S)
        if self._reader is not None:
            self._reader.join(timeout=DEADLINE_S)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.url = ""
        return code

    def ensure_dead(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


@contextmanager
def serve(store: Path, *args: str) -> Iterator[Server]:
    """A started `Server`, killed at the end of the block if it still runs (a test stops it when it means to)."""
    server = Server(store, *args)
    try:
        server.start()
        yield server
    finally:
        server.ensure_dead()


class Strace:
    """``strace -f -p PID`` injecting a failure into syscalls of a running process, until `detach`.

    `when` is strace's own: ``1`` fails the first call of each thread, ``1+`` every call.
    """

    def __init__(self, pid: int, syscalls: str, error: str, when: str = "1") -> None:
        path = self.path()
        self.pid = pid
        self.process = subprocess.Popen(
            [path, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}", "-e",
             f"inject={syscalls}:error={error}:when={when}", "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            wait_until(self._attached, f"strace has attached to every thread of {pid}")
        except BaseException:
            self.detach()
            raise

    @staticmethod
    def path() -> str:
        """strace's path; skips (fails under CI) when it is not installed."""
        path = shutil.which("strace")
        if path is None:
            unavailable("strace is not installed (apt-get install strace)")
        return path

    def _tracers(self) -> set[int]:
        tracers = set()
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:  # the thread ended
                continue
            found = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
            tracers.add(int(found.group(1)) if found else 0)
        return tracers

    def _attached(self) -> bool:
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            unavailable(f"strace cannot attach (needs ptrace): {self.process.stderr.read().strip()}")
        return self._tracers() == {self.process.pid}

    def detach(self) -> None:
        """Stop strace (it detaches from every thread); returns once no thread is traced."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=DEADLINE_S)
        if Path(f"/proc/{self.pid}").exists():
            wait_until(lambda: self._tracers() <= {0}, f"strace has detached from {self.pid}")
        if self.process.stderr is not None:
            self.process.stderr.close()


# --- the API -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """An input the server answered 202."""

    worker_id: str
    input_id: str
    content: str
    run_id: str
    input_sequence: int
    event_id: int


def content_for(input_id: str, size: int) -> str:
    """An input's content: its id first (so it can be found), padded to `size` characters."""
    return (input_id + " " + "x" * size)[:size] if size > len(input_id) else input_id


def send(client: httpx.Client, worker_id: str, input_id: str, content: str) -> tuple[httpx.Response, Ack | None]:
    response = client.post(f"/v1/workers/{worker_id}/input", json={"content": content, "input_id": input_id})
    if response.status_code != 202:
        return response, None
    ack = response.json()["ack"]
    return response, Ack(worker_id, input_id, content, ack["run_id"], ack["input_sequence"], ack["event_id"])


@dataclass
class Feeder:
    """Threads that send input to their Workers, one at a time each, without pause, until `stop`.

    Every answer is kept: `acks` (202), `refused` (any other status, with its body), `lost` (no answer: the
    connection broke, the process died). Each input has its own `input_id`.
    """

    url: str
    worker_ids: list[str]
    size: int = 64
    acks: list[Ack] = field(default_factory=list)
    refused: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)  # wid, input_id, status, body
    lost: list[tuple[str, str, str]] = field(default_factory=list)  # wid, input_id, content
    answered: int = 0  # answers of any status, 409 worker_busy included
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Feeder:
        for wid in self.worker_ids:
            thread = threading.Thread(target=self._feed, args=(wid,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _feed(self, wid: str) -> None:
        tag = uuid.uuid4().hex[:8]
        with httpx.Client(base_url=self.url, timeout=DEADLINE_S) as client:
            n = 0
            while not self._stop.is_set():
                input_id = f"in-{tag}-{n}"
                content = content_for(input_id, self.size)
                n += 1
                try:
                    response, ack = send(client, wid, input_id, content)
                except httpx.TransportError:
                    with self._lock:
                        self.lost.append((wid, input_id, content))
                    return  # the process is gone
                with self._lock:
                    self.answered += 1
                    if ack is not None:
                        self.acks.append(ack)
                    elif response.status_code != 409:
                        self.refused.append((wid, input_id, response.status_code, response.json()))
                if response.status_code == 409:  # worker_busy: its previous run has not ended yet
                    self._stop.wait(0.005)  # pacing, not synchronisation: do not spin on a busy Worker

    def count(self, predicate: Callable[[Feeder], int]) -> int:
        with self._lock:
            return predicate(self)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_S)


def transcript(client: httpx.Client, worker_id: str) -> list[dict[str, Any]]:
    """Every entry of a Worker's transcript, page by page (a page that does not move on fails the test)."""
    items: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        response = client.get(f"/v1/workers/{worker_id}/transcript", params={"start": start, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()["transcript"]
        items.extend(page["items"])
        assert page["next_start"] is None or page["next_start"] > start, page
        start = page["next_start"]
    return items


def events(client: httpx.Client) -> list[dict[str, Any]]:
    """Every event of the log, oldest first."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        response = client.get("/v1/events", params={"after": after, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            return found


def check_acknowledged(
    client: httpx.Client, acks: Sequence[Ack], maybe: Sequence[tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """What a restarted server must show: every acknowledged input exactly once in its Worker's transcript, at its
    sequence and with its run; every run the log accepted with exactly one terminal event, and every acknowledged
    one with a terminal status; each input of `maybe` (sent, never answered) at most once; no event id served
    twice. Returns the event log."""
    log = events(client)
    ids = [event["id"] for event in log]
    assert len(ids) == len(set(ids)) and ids == sorted(ids), "an event id served twice or out of order"
    terminal = Counter(event["run_id"] for event in log if event["kind"] in TERMINAL_EVENTS)
    for event in log:
        if event["kind"] == "input_accepted":
            assert terminal[event["run_id"]] == 1, f"{event['run_id']}: {terminal[event['run_id']]} terminal events"
    entries: dict[str, Counter[str]] = {}
    by_content: dict[tuple[str, str], dict[str, Any]] = {}
    for wid in {ack.worker_id for ack in acks} | {wid for wid, _, _ in maybe}:
        items = transcript(client, wid)
        entries[wid] = Counter(item["content"] for item in items if item["role"] == "user")
        by_content.update({(wid, item["content"]): item for item in items if item["role"] == "user"})
    for ack in acks:
        assert entries[ack.worker_id][ack.content] == 1, f"{ack.input_id}: {entries[ack.worker_id][ack.content]}x"
        entry = by_content[(ack.worker_id, ack.content)]
        assert (entry["sequence"], entry["run_id"]) == (ack.input_sequence, ack.run_id), (ack, entry)
        assert terminal[ack.run_id] == 1, f"{ack.run_id}: {terminal[ack.run_id]} terminal events"
        response = client.get(f"/v1/workers/{ack.worker_id}/runs/{ack.run_id}")
        assert response.status_code == 200, response.text
        assert response.json()["run"]["status"] in {kind.removeprefix("run_") for kind in TERMINAL_EVENTS}
    for wid, input_id, content in maybe:
        assert entries[wid][content] <= 1, f"{input_id} (never answered) is there {entries[wid][content]} times"
    return log
