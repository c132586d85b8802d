"""Real faults against the real process: `worker-runtime-http serve` on 127.0.0.1 with its fs store on a file
system the test controls, driven over HTTP.

* a full disk (a 2 MiB tmpfs filled by a filler file while input arrives),
* an EIO from fsync (strace's syscall fault injection, attached to the running process),
* SIGKILL under concurrent input, a few cycles on one store (`tools/fault_cycles.py` runs many more),
* a read-only `events/`, `workers/` or `index/` (a read-only bind mount; root ignores a chmod).

The full disk and the EIO each run once (a module fixture; `tools/fault_cycles.py` calls the same functions) and
record what they saw; the tests check the records. Mounts need root and strace needs ptrace: without them a test
is skipped, under ``CI=true`` it fails (see fault_helpers).
"""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import profiles_toml
from fault_helpers import (
    Ack,
    Feeder,
    Server,
    Strace,
    check_acknowledged,
    content_for,
    events,
    read_only,
    send,
    serve,
    tmpfs,
    transcript,
    wait_until,
)

WORKERS = ["w0", "w1", "w2", "w3"]

Answer = tuple[int, dict[str, Any]]  # status, body


def answer(response: httpx.Response) -> Answer:
    return response.status_code, response.json()


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("error") or {}


def create_workers(client: httpx.Client, worker_ids: list[str]) -> None:
    for wid in worker_ids:
        response = client.post("/v1/workers", json={"worker_id": wid})
        assert response.status_code == 201, response.text


def fill(path: Path) -> None:
    """Write `path` until the file system is full, to the last byte it takes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)


def input_until_not_busy(client: httpx.Client, wid: str, input_id: str, content: str) -> tuple[Answer, Ack | None]:
    """Send an input, again while its Worker is busy (its previous run still ends); the first other answer."""
    holder: list[tuple[Answer, Ack | None]] = []

    def sent() -> bool:
        response, ack = send(client, wid, input_id, content)
        if response.status_code == 409 and error_of(response.json()).get("code") == "worker_busy":
            return False
        holder.append((answer(response), ack))
        return True

    wait_until(sent, f"{wid} is not busy")
    return holder[0]


# --- a full disk -----------------------------------------------------------------------------------------------


@dataclass
class FullDisk:
    acks: list[Ack] = field(default_factory=list)
    refused: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    full_input: Answer = (0, {})
    full_create: Answer = (0, {})
    refused_create_seen: int = 0  # GET of the Worker whose create was refused, while full
    reads: dict[str, int] = field(default_factory=dict)
    readyz_full: Answer = (0, {})
    freed_input: Answer = (0, {})
    readyz_freed: Answer = (0, {})
    exit_code: int | None = None
    restart_problem: str | None = None
    refused_present: list[str] = field(default_factory=list)  # refused inputs found after the restart
    refused_create_after_restart: int = 0


def run_full_disk(root: Path) -> FullDisk:
    """Fill a 2 MiB tmpfs under the running process while input arrives; probe it full; free it; restart."""
    seen = FullDisk()
    with tmpfs(root / "disk", "2m") as disk:
        store = disk / "store"
        with serve(store, "--shutdown-grace-s", "0") as server, server.client() as client:
            create_workers(client, [*WORKERS, "quiet"])  # "quiet" gets no run: never busy when probed
            feeder = Feeder(server.url, WORKERS, size=1024).start()
            try:
                wait_until(lambda: feeder.count(lambda f: len(f.acks)) >= 8, "some input is acknowledged")
                fill(disk / "filler")  # input goes on arriving while the disk fills up
                # The disk is full: 64 KiB of content needs new pages, whatever slack the store's files have.
                response, ack = send(client, "quiet", "in-full", content_for("in-full", 65536))
                seen.full_input = answer(response)
                seen.acks.extend([ack] if ack else [])
                answered = feeder.count(lambda f: f.answered)
                wait_until(lambda: feeder.count(lambda f: f.answered) >= answered + 2 * len(WORKERS), "more input")
            finally:
                feeder.stop()
            seen.acks.extend(feeder.acks)
            seen.refused.extend(feeder.refused)
            seen.full_create = answer(client.post("/v1/workers", json={"worker_id": "full-create"}))
            seen.refused_create_seen = client.get("/v1/workers/full-create").status_code
            seen.reads = {
                path: client.get(path).status_code
                for path in ("/v1/runtime", "/v1/workers", "/v1/workers/w1", "/v1/workers/w1/transcript", "/v1/events")
            }
            seen.readyz_full = answer(client.get("/readyz"))
            (disk / "filler").unlink()  # space returns: no restart
            response, ack = send(client, "quiet", "in-freed", content_for("in-freed", 65536))
            seen.freed_input = answer(response)
            seen.acks.extend([ack] if ack else [])
            seen.readyz_freed = answer(client.get("/readyz"))
            seen.exit_code = server.stop()
        with serve(store) as server, server.client() as client:
            try:
                check_acknowledged(client, seen.acks)
            except AssertionError as exc:
                seen.restart_problem = str(exc)
            users = {
                wid: {item["content"] for item in transcript(client, wid) if item["role"] == "user"} for wid in WORKERS
            }
            seen.refused_present = [  # a 503 whose outcome is not unknown changed nothing
                input_id
                for wid, input_id, status, body in seen.refused
                if error_of(body).get("details", {}).get("outcome") != "unknown"
                and content_for(input_id, 1024) in users[wid]
            ]
            seen.refused_create_after_restart = client.get("/v1/workers/full-create").status_code
            assert server.stop() == 0, server.stderr
    return seen


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> FullDisk:
    return run_full_disk(tmp_path_factory.mktemp("full"))


def test_on_a_full_disk_writes_answer_503_reads_go_on_and_no_acknowledged_input_is_lost(full_disk: FullDisk) -> None:
    assert len(full_disk.acks) >= 8
    refusals = {
        (status, error_of(body).get("code"), error_of(body).get("retryable")) for *_, status, body in full_disk.refused
    }
    assert refusals <= {(503, "runtime_unavailable", True)}, full_disk.refused[:3]
    status, body = full_disk.full_input
    assert (status, error_of(body).get("code"), error_of(body).get("retryable")) == (503, "runtime_unavailable", True)
    assert full_disk.reads == dict.fromkeys(full_disk.reads, 200)
    assert full_disk.exit_code == 0
    assert full_disk.restart_problem is None, full_disk.restart_problem


def test_on_a_full_disk_readyz_is_503_and_service_resumes_by_itself_once_space_returns(full_disk: FullDisk) -> None:
    assert full_disk.readyz_full == (503, {"status": "store_unavailable"})
    status, body = full_disk.full_create
    assert (status, error_of(body).get("code")) == (503, "runtime_unavailable")
    assert full_disk.refused_create_seen == 404 and full_disk.refused_create_after_restart == 404
    assert full_disk.refused_present == []  # a refused write changes nothing
    assert full_disk.freed_input[0] == 202, full_disk.freed_input
    assert full_disk.readyz_freed == (200, {"status": "ok"})


# --- an EIO from fsync -----------------------------------------------------------------------------------------


@dataclass
class FailedFsync:
    acks: list[Ack] = field(default_factory=list)
    served_event_id: int = 0  # the highest event id any answer named before the restart
    served_runs: set[str] = field(default_factory=set)
    failed_input: Answer = (0, {})
    later_inputs: list[Answer] = field(default_factory=list)
    later_create: Answer = (0, {})
    reads: dict[str, int] = field(default_factory=dict)
    readyz: Answer = (0, {})
    exit_code: int | None = None
    restart_problem: str | None = None
    after_restart: Ack | None = None
    retried: Ack | None = None  # the input whose fsync failed, sent again with its input_id after the restart
    retried_count: int = 0  # how often it is then in the transcript
    restart_events: list[dict[str, Any]] = field(default_factory=list)


def run_failed_fsync(root: Path) -> FailedFsync:
    """Make one fsync of the running process fail with EIO (strace), probe it, restart it."""
    Strace.path()  # before anything starts
    seen = FailedFsync()
    store = root / "store"
    failed = ("w0", "in-eio", "in-eio the fsync of this one fails")
    with serve(store, "--shutdown-grace-s", "0") as server, server.client() as client:
        create_workers(client, ["w0", "w1"])
        for n in range(3):
            for wid in ("w0", "w1"):
                _, ack = input_until_not_busy(client, wid, f"in-{wid}-{n}", f"in-{wid}-{n} before")
                assert ack is not None
                seen.acks.append(ack)
        for wid in ("w0", "w1"):  # no run's end is being written: the next fsync is the input's
            wait_until(lambda w=wid: client.get(f"/v1/workers/{w}").json()["worker"]["status"] == "idle", "idle")
        strace = Strace(server.pid, "fsync,fdatasync", "EIO", when="1")
        try:
            response, ack = send(client, *failed)
        finally:
            strace.detach()
        seen.failed_input = answer(response)
        assert ack is None, "the fsync did not fail: strace injected nothing"
        for wid, input_id in (("w1", "in-w1-later"), ("w0", "in-w0-later")):  # no fault is injected any more
            response, _ = send(client, wid, input_id, input_id)
            seen.later_inputs.append(answer(response))
        seen.later_create = answer(client.post("/v1/workers", json={"worker_id": "later"}))
        seen.reads = {
            path: client.get(path).status_code
            for path in ("/v1/runtime", "/v1/workers/w0", "/v1/workers/w0/transcript", "/v1/events")
        }
        seen.readyz = answer(client.get("/readyz"))
        log = events(client)
        seen.served_event_id = max([e["id"] for e in log] + [a.event_id for a in seen.acks])
        seen.served_runs = {a.run_id for a in seen.acks} | {e["run_id"] for e in log if e["run_id"]}
        seen.exit_code = server.stop()
    with serve(store) as server, server.client() as client:
        try:
            seen.restart_events = check_acknowledged(client, seen.acks, maybe=[failed])
            _, seen.after_restart = send(client, "w1", "in-w1-restarted", "in-w1-restarted")
            wait_until(lambda: client.get("/v1/workers/w0").json()["worker"]["status"] == "idle", "w0 is idle")
            _, seen.retried = send(client, *failed)
            seen.retried_count = [i["content"] for i in transcript(client, "w0")].count(failed[2])
        except AssertionError as exc:
            seen.restart_problem = str(exc)
        assert server.stop() == 0, server.stderr
    return seen


@pytest.fixture(scope="module")
def failed_fsync(tmp_path_factory: pytest.TempPathFactory) -> FailedFsync:
    return run_failed_fsync(tmp_path_factory.mktemp("eio"))


def test_after_a_failed_fsync_writes_are_refused_until_a_restart_and_no_id_is_reused(failed_fsync: FailedFsync) -> None:
    seen = failed_fsync
    for status, body in [seen.failed_input, *seen.later_inputs, seen.later_create]:
        assert (status, error_of(body).get("code"), error_of(body).get("retryable")) == (
            503,
            "runtime_unavailable",
            True,
        ), body
    assert seen.reads == dict.fromkeys(seen.reads, 200)
    assert seen.exit_code == 0
    assert seen.restart_problem is None, seen.restart_problem
    # After the restart: writes work again, and every id goes on above all that was served.
    assert seen.after_restart is not None
    assert seen.after_restart.event_id > seen.served_event_id
    assert seen.after_restart.run_id not in seen.served_runs
    new_runs = {e["run_id"] for e in seen.restart_events if e["kind"] == "input_accepted"}
    assert not (new_runs - {a.run_id for a in seen.acks}) & seen.served_runs
    # The input whose outcome was unknown: its retry (same input_id) is safe, and it is there once.
    assert seen.retried is not None and seen.retried_count == 1


def test_after_a_failed_fsync_the_503s_say_the_outcome_is_unknown_and_readyz_is_503(failed_fsync: FailedFsync) -> None:
    for _, body in [failed_fsync.failed_input, *failed_fsync.later_inputs, failed_fsync.later_create]:
        assert error_of(body).get("details", {}).get("outcome") == "unknown", body
    assert failed_fsync.readyz == (503, {"status": "store_unavailable"})


# --- SIGKILL under concurrent input ----------------------------------------------------------------------------


def kill_cycles(tmp: Path, cycles: int, rng: random.Random) -> dict[str, int]:
    """Start the process on one store `cycles` times; each time give every `slow` Worker a run that only ends when
    cancelled, feed the echo Workers concurrently, and SIGKILL the process after a random number of acks. Then
    restart once more and check every answer ever given (also `tools/fault_cycles.py`). Returns counts."""
    store = tmp / "store"
    argv = ("--config", str(profiles_toml(tmp / "profiles.toml")))
    echo, slow = ["e0", "e1", "e2"], ["s0", "s1"]
    acks: list[Ack] = []
    lost: list[tuple[str, str, str]] = []
    running: list[Ack] = []
    for cycle in range(cycles):
        with serve(store, *argv) as server, server.client() as client:
            if cycle == 0:
                create_workers(client, echo)
                for wid in slow:
                    response = client.post(
                        "/v1/workers", json={"worker_id": wid, "profile": {"kind": "named", "name": "slow"}}
                    )
                    assert response.status_code == 201, response.text
            for wid in slow:  # each restart interrupted the last one: the Worker is idle again
                _, ack = send(client, wid, f"in-{wid}-{cycle}", f"in-{wid}-{cycle} runs until killed")
                assert ack is not None
                running.append(ack)
            feeder = Feeder(server.url, echo).start()
            target = rng.randint(5, 40)
            try:
                wait_until(lambda f=feeder, n=target: f.count(lambda f: len(f.acks)) >= n, f"{target} acks")
                server.kill()
            finally:
                feeder.stop()
            assert not feeder.refused, feeder.refused[:3]
            acks.extend(feeder.acks)
            lost.extend(feeder.lost)
    with serve(store, *argv) as server, server.client() as client:
        check_acknowledged(client, acks + running, maybe=lost)
        for ack in running:
            run = client.get(f"/v1/workers/{ack.worker_id}/runs/{ack.run_id}").json()["run"]
            assert run["status"] == "interrupted", run
        for wid in echo + slow:
            assert client.get(f"/v1/workers/{wid}").json()["worker"]["status"] == "idle"
        assert server.stop() == 0, server.stderr
    return {"cycles": cycles, "acks": len(acks), "interrupted": len(running), "unanswered": len(lost)}


def test_sigkill_under_concurrent_input_loses_no_ack_and_ends_every_run_once(tmp_path: Path) -> None:
    counts = kill_cycles(tmp_path, cycles=2, rng=random.Random(12))
    assert counts["acks"] >= 10 and counts["interrupted"] == 4


# --- a read-only directory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["events", "workers", "index"])
def test_a_read_only_store_directory_stops_serve_with_exit_1_and_one_line_naming_it(tmp_path: Path, name: str) -> None:
    store = tmp_path / "store"
    for sub in ("events", "workers", "index"):
        (store / sub).mkdir(parents=True)
    with read_only(store / name):
        done = subprocess.run(Server(store).argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ExceptionGroup" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if re.search(r"\berror\b", line, re.I)]
    assert errors == [f"worker-runtime-http: error: cannot write in {store / name}: Read-only file system"], errors


def test_serve_that_cannot_write_its_first_event_exits_1_without_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serve(store) as server:
        assert server.stop() == 0
    [segment] = sorted((store / "events").glob("*.jsonl"))
    with read_only(segment):  # its directory takes new files; the log cannot be appended to
        done = subprocess.run(Server(store).argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ExceptionGroup" not in done.stderr, done.stderr
    assert str(segment) in done.stderr, done.stderr  # the log line before the error names the file
    assert done.stderr.splitlines()[-1].startswith("worker-runtime-http: error: "), done.stderr


def test_serve_that_cannot_write_its_recovery_on_a_full_disk_exits_1_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        store = disk / "store"
        with serve(store) as server, server.client() as client:
            create_workers(client, ["w0"])
            _, ack = send(client, "w0", "in-0", "in-0 replayed at the next start")
            assert ack is not None
            server.kill()  # the next start replays the log
        for name in ("transcript.jsonl", "transcript.idx"):  # a kill before they were written: replay writes them
            (store / "workers" / "w0" / name).unlink()
        fill(disk / "filler")
        done = subprocess.run(Server(store).argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ExceptionGroup" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if re.search(r"\berror\b", line, re.I)]
    assert errors == [f"worker-runtime-http: error: cannot open the store at {store}: No space left on device"]
