"""The queue of runs across restarts, over the real FS store: queued runs survive a crash and a graceful shutdown,
start after the start-up's interrupted runs, in order and once each; a repeated `input_id` still answers its first
(queued) ack; a queued run whose profile vanished ends `failed`; a stop refused midway leaves the runs it did not
end queued. End to end: the real process, the client, kill -9."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fault_helpers import events, serve, transcript
from powerloss import PowerLoss
from store_faults import FaultyStore, HeldWrite

from worker_runtime_client import RuntimeClient
from worker_runtime_core import Engine, ProfileConfig, RequestClosedError, RunContext, Runtime, RuntimeUnavailableError
from worker_runtime_store_fs import FsRuntimeStore


class Held(Engine):
    """Runs until cancelled: a run that is still active when the process goes."""

    name = "held"

    async def run(self, ctx: RunContext) -> None:
        await anyio.sleep_forever()


class Answer(Engine):
    """Answers at once (the same profile's engine after the restart)."""

    name = "answer"

    async def run(self, ctx: RunContext) -> None:
        await ctx.emit(f"did {ctx.content}")


def _runtime(root: Path, engine: str | None) -> Runtime:
    profiles = {"work": ProfileConfig(engine)} if engine is not None else {}
    return Runtime(
        runtime_id="rt-q", store=FsRuntimeStore(root), profiles=profiles, engines={"held": Held, "answer": Answer}
    )


async def _queue_three(rt: Runtime) -> tuple[str, list[str]]:
    await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "work"})
    active = (await rt.send_input("w", "first")).run_id
    queued = [(await rt.send_input("w", f"q{n}", input_id=f"in-{n}", on_busy="enqueue")).run_id for n in range(3)]
    return active, queued


async def test_queued_runs_survive_a_crash_and_start_after_the_interrupted_runs_in_order(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with PowerLoss(root) as disk:
        rt = _runtime(root, "held")
        await rt.start()
        active, queued = await _queue_three(rt)
        before = rt.newest_event_id
        disk.cut()  # the process dies here: nothing more reaches the disk
        await rt.close()
        disk.resume()
    async with _runtime(root, "answer") as rt:
        for run_id in queued:
            assert (await rt.wait_for_run("w", run_id)).status == "completed"
        after = [e for e in (await rt.read_events(before, 100)).events]
        kinds = [(e.kind, e.run_id) for e in after if e.kind in ("runtime_started", "run_interrupted", "run_started")]
        assert kinds == [
            ("runtime_started", None),
            ("run_interrupted", active),
            *[("run_started", run_id) for run_id in queued],
        ]
        assert [e.run_id for e in after if e.kind == "run_completed"] == queued
        users = [e.content for e in (await rt.transcript("w")).items if e.role == "user"]
        assert users == ["first", "q0", "q1", "q2"]
        repeat = await rt.send_input("w", "q1", input_id="in-1", on_busy="enqueue")
        assert repeat.duplicate and (repeat.run_id, repeat.queued, repeat.input_sequence) == (queued[1], True, None)
        assert (await rt.get_worker("w")).status == "idle"


async def test_at_a_graceful_shutdown_queued_runs_stay_queued_and_a_wait_for_one_is_answered(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rt = _runtime(root, "held")
    await rt.start()
    active, queued = await _queue_three(rt)
    outcome: list[BaseException] = []

    async def wait() -> None:
        try:
            await rt.wait_for_run("w", queued[0])
        except RuntimeUnavailableError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        await rt.close()
    assert len(outcome) == 1
    async with _runtime(root, "held") as rt:
        assert (await rt.get_run("w", active)).status == "interrupted"
        worker = await rt.get_worker("w")
        assert worker.active_run is not None and worker.active_run.run_id == queued[0]
        assert worker.queued_runs == queued[1:] and worker.status == "busy"
        await rt.stop_worker("w")


async def test_a_queued_run_whose_profile_vanished_ends_failed_with_unknown_profile(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rt = _runtime(root, "held")
    await rt.start()
    _, queued = await _queue_three(rt)
    await rt.close()
    async with _runtime(root, None) as rt:  # the profile `work` is gone
        for run_id in queued:
            run = await rt.get_run("w", run_id)
            assert (run.status, run.input_sequence) == ("failed", None)
            assert run.error is not None and run.error.code == "unknown_profile"
        worker = await rt.get_worker("w")
        assert (worker.status, worker.queued_runs, worker.active_run) == ("idle", [], None)
        started = [e for e in (await rt.read_events(0, 1000)).events if e.kind == "run_started"]
        assert started == []


def test_five_inputs_enqueued_through_the_client_run_in_order_exactly_once_after_kill_9(tmp_path: Path) -> None:
    store = tmp_path / "store"
    sleeper = '["python3", "-c", "import time; time.sleep(600)"]'
    held = tmp_path / "held.toml"
    held.write_text(f'[profiles.work]\nengine = "command"\nargv = {sleeper}\nkill_grace_s = 1\n')
    echo = tmp_path / "echo.toml"
    echo.write_text('[profiles.work]\nengine = "echo"\n')
    acks: list[str] = []

    async def enqueue(url: str) -> None:
        async with RuntimeClient(url) as client:
            await client.create_worker(worker_id="w", profile={"kind": "named", "name": "work"})
            await client.send_input("w", "runs until killed")
            for n in range(5):
                ack = await client.send_input("w", f"queued {n}", on_busy="enqueue")
                assert ack.queued and ack.input_sequence is None
                acks.append(ack.run_id)
            assert (await client.get_worker("w")).queued_runs == acks

    async def drain(url: str) -> list[str]:
        async with RuntimeClient(url) as client:
            return [(await client.wait_for_run("w", run_id, timeout=30)).status for run_id in acks]

    with serve(store, "--config", str(held)) as server:
        anyio.run(enqueue, server.url)
        server.kill()
    with serve(store, "--config", str(echo)) as server:
        statuses = anyio.run(drain, server.url)
        assert statuses == ["completed"] * 5
        with server.client() as client:
            log = events(client)
            started = [e["run_id"] for e in log if e["kind"] == "run_started"]
            completed = [e["run_id"] for e in log if e["kind"] == "run_completed"]
            assert started == acks and completed == acks
            users = [e["content"] for e in transcript(client, "w") if e["role"] == "user"]
            assert users == ["runs until killed", *[f"queued {n}" for n in range(5)]]
        assert server.stop() == 0


async def _until_waiting(rt: Runtime, run_id: str) -> None:
    """Return once run `run_id` of Worker ``a`` waits for an answer (woken by each durable write)."""
    with anyio.fail_after(10):
        while True:
            signal = rt.event_signal()
            if (await rt.get_run("a", run_id)).status == "waiting":
                return
            await signal.wait()


def _asking(root: Path) -> Runtime:
    return Runtime(runtime_id="rt-q", store=FsRuntimeStore(root))


async def _asking_with_two_queued(rt: Runtime) -> tuple[str, str, list[str]]:
    """A Worker of the `ask` engine whose run waits for an answer, two inputs queued behind it."""
    await rt.create_worker(worker_id="a", profile={"kind": "builtin", "name": "ask"})
    first = (await rt.send_input("a", "first")).run_id
    await _until_waiting(rt, first)
    request = (await rt.open_requests()).requests[0].request.request_id
    queued = [(await rt.send_input("a", f"q{n}", on_busy="enqueue")).run_id for n in range(2)]
    return first, request, queued


async def _first_queued_asks(rt: Runtime, first: str, queued: list[str]) -> None:
    """After the restart: the waiting run was interrupted with its request closed, the first queued run started
    and asks in its turn, the second is still queued behind it."""
    await _until_waiting(rt, queued[0])
    interrupted = await rt.get_run("a", first)
    assert interrupted.status == "interrupted" and interrupted.pending_request is None
    assert [(r.run_id, r.request.prompt) for r in (await rt.open_requests()).requests] == [(queued[0], "q0")]
    assert (await rt.get_run("a", queued[1])).status == "queued"
    assert (await rt.get_worker("a")).queued_runs == [queued[1]]


async def test_a_waiting_run_with_runs_queued_behind_it_survives_a_crash_as_interrupted_then_the_queue_starts(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    with PowerLoss(root) as disk:
        rt = _asking(root)
        await rt.start()
        first, request, queued = await _asking_with_two_queued(rt)
        disk.cut()
        await rt.close()
        disk.resume()
    async with _asking(root) as rt:
        await _first_queued_asks(rt, first, queued)
        closed = [e for e in (await rt.read_events(worker_id="a")).events if e.kind == "input_responded"]
        assert [(e.data["request_id"], e.data["outcome"]) for e in closed] == [(request, "closed")]  # type: ignore[index]
        with pytest.raises(RequestClosedError):
            await rt.respond("a", first, request, approved=True)


async def test_at_a_graceful_shutdown_a_waiting_run_is_interrupted_and_the_runs_queued_behind_it_stay_queued(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    async with _asking(root) as rt:
        first, _, queued = await _asking_with_two_queued(rt)
    async with _asking(root) as rt:
        await _first_queued_asks(rt, first, queued)


class _DownFrom(FaultyStore):
    """Refuses every write from event `down_from` on: the disk fills up in the middle of a stop and stays full."""

    down_from = 0

    async def _write(self, write: HeldWrite) -> None:
        if self.down_from and write.batch.event.id >= self.down_from:
            self.failing = True
        await super()._write(write)


async def test_a_stop_refused_midway_leaves_the_runs_it_did_not_end_to_start_after_a_restart(tmp_path: Path) -> None:
    store = _DownFrom(FsRuntimeStore(tmp_path))
    async with Runtime(
        runtime_id="rt-q", store=store, profiles={"work": ProfileConfig("held")}, engines={"held": Held}
    ) as rt:
        _, queued = await _queue_three(rt)
        store.down_from = (await rt.get_worker("w")).last_event_id + 3  # the active run's end and q0's go in
        with pytest.raises(RuntimeUnavailableError):
            await rt.stop_worker("w")
        assert (await rt.get_worker("w")).queued_runs == queued[1:]
    async with _runtime(tmp_path, "answer") as rt:  # on disk the Worker is busy with two runs queued, not idle
        with anyio.fail_after(30):  # a guard only: runs queued on an idle Worker would never start
            for run_id in queued[1:]:
                assert (await rt.wait_for_run("w", run_id)).status == "completed"
        assert (await rt.get_run("w", queued[0])).status == "cancelled"
        users = [e.content for e in (await rt.transcript("w")).items if e.role == "user"]
        assert users == ["first", "q1", "q2"]
        assert (await rt.get_worker("w")).status == "idle"
