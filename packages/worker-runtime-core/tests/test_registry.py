"""The Worker registry: every status change goes through the lifecycle table, and nothing else sets a status."""

from __future__ import annotations

import ast
from pathlib import Path

import anyio
import pytest
from store_faults import FaultyStore

import worker_runtime_core
from worker_runtime_core import Runtime, RuntimeUnavailableError, lifecycle, registry, runs

SRC = Path(worker_runtime_core.__file__).parent


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = getattr(lifecycle, name)

    def spy(state: str, event: str) -> str:
        calls.append((state, event))
        return real(state, event)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, name, spy)
    return calls


async def test_a_worker_moves_only_by_the_lifecycle_table(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, registry, "next_worker_state")
    async with Runtime() as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        ack = await rt.send_input(wid, "hi")
        await rt.wait_for_run(wid, ack.run_id)
        await rt.stop_worker(wid)
        await rt.delete_worker(wid)
    assert calls == [
        ("idle", "accepted"),  # a memory store's write never suspends: nothing is in flight
        ("running", "run_ended"),
        ("idle", "stop"),
        ("stopping", "stop_committed"),
        ("stopped", "delete"),
        ("deleting", "delete_committed"),
    ]


async def test_an_input_to_a_store_that_suspends_is_accepting_until_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, registry, "next_worker_state")
    store = FaultyStore()  # its writes suspend
    async with Runtime(store=store) as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        store.hold = True
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.send_input, wid, "hi")
                await store.wait_held(1)
                assert calls == [("idle", "accept")]
                store.hold = False
                store.release_all()
    assert calls[:2] == [("idle", "accept"), ("accepting", "accept_committed")]


async def test_a_refused_write_moves_the_worker_back_by_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, registry, "next_worker_state")
    store = FaultyStore()
    async with Runtime(store=store) as rt:
        wid = (await rt.create_worker(worker_id="w")).worker_ref.worker_id
        store.failing = True
        with pytest.raises(RuntimeUnavailableError):
            await rt.send_input(wid, "hi")
        with pytest.raises(RuntimeUnavailableError):
            await rt.stop_worker(wid)
        store.failing = False
        assert (await rt.get_worker(wid)).status == "idle"
    assert calls == [
        ("idle", "accept"),
        ("accepting", "accept_refused"),
        ("idle", "stop"),
        ("stopping", "stop_refused"),
    ]


async def test_a_run_moves_only_by_the_run_lifecycle_table(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, runs, "next_run_state")
    async with Runtime() as rt:
        wid = (await rt.create_worker()).worker_ref.worker_id
        ack = await rt.send_input(wid, "hi")
        await rt.wait_for_run(wid, ack.run_id)
    assert calls == [("running", "end"), ("ending", "end_committed")]


def _status_writes(tree: ast.Module) -> list[int]:
    """Lines that set a record's or a run's ``.status`` or ``.state`` (on anything but ``self``), or stage a Worker
    status literal in a copy (``_replace(record, status="idle")``)."""
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr in ("status", "state"):
                if not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                    lines.append(t.lineno)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
            "_replace",
            "replace",
        ):
            for kw in node.keywords:
                if (
                    kw.arg == "status"
                    and isinstance(kw.value, ast.Constant)
                    and kw.value.value in ("idle", "busy", "stopped")
                ):
                    lines.append(kw.value.lineno)
    return lines


def test_no_module_but_the_registry_sets_a_status_by_hand() -> None:
    allowed = {"registry.py"}  # Registry.transition, by the table (ActiveRun.move sets its own `self.state`)
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in allowed and (lines := _status_writes(ast.parse(path.read_text())))
    }
    assert found == {}
