"""Workers: create, get, list, delete, limits and lifecycle."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest

from worker_runtime_core import (
    CapacityExceededError,
    CreateWorkerRequest,
    InvalidRequestError,
    InvalidWorkerIdError,
    Limits,
    LimitTooLargeError,
    RoleIntent,
    Runtime,
    RuntimeUnavailableError,
    TaskIntent,
    UnknownProfileError,
    UnsupportedCapabilityError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerNotStoppedError,
)
from worker_runtime_core.ids import invalid_id_message


async def test_create_with_no_arguments_gives_an_idle_echo_worker(rt: Runtime) -> None:
    worker = await rt.create_worker()
    assert worker.worker_ref.runtime_id == "rt-test"
    assert worker.worker_ref.worker_id.startswith("w-")
    assert worker.status == "idle"
    assert worker.profile == "default"
    assert worker.intent.__struct_config__.tag == "assistant"
    assert worker.transcript_len == 0
    assert worker.last_run is None and worker.active_run is None
    assert worker.display_ref == f"{worker.worker_ref.worker_id}@Test"
    assert worker.last_event_id > 0


async def test_create_keeps_every_field_of_the_request(rt: Runtime) -> None:
    request = CreateWorkerRequest(
        worker_id="lint-1",
        display_name="Linter",
        intent=TaskIntent(objective="lint the repo"),
        profile={"kind": "builtin", "name": "echo"},  # type: ignore[arg-type]
        config_bundle={"id": "b1"},  # type: ignore[arg-type]
        workspace_refs=[{"name": "repo", "reference": "git@x:y"}],  # type: ignore[list-item]
    )
    worker = await rt.create_worker(request)
    assert worker.display_ref == "Linter@Test"
    assert worker.profile == "builtin:echo"
    assert worker.intent == TaskIntent(objective="lint the repo")
    assert worker.config_bundle is not None and worker.config_bundle.id == "b1"
    assert [r.name for r in worker.workspace_refs] == ["repo"]
    assert await rt.get_worker("lint-1") == worker


async def test_keyword_fields_are_validated_like_a_body(rt: Runtime) -> None:
    worker = await rt.create_worker(worker_id="r1", intent=RoleIntent(role="reviewer"))
    assert worker.intent == RoleIntent(role="reviewer")
    with pytest.raises(InvalidRequestError, match="worker_id"):
        await rt.create_worker(worker_id="../etc")
    with pytest.raises(InvalidRequestError):
        await rt.create_worker(intent={"kind": "nonsense"})
    with pytest.raises(InvalidRequestError):
        await rt.create_worker(surprise=1)
    assert [w.worker_ref.worker_id for w in (await rt.list_workers()).workers] == ["r1"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"worker_id": "bad id"}, "worker_id"),
        ({"worker_id": "w" * 129}, "worker_id"),
        ({"config_bundle": {"id": ".b"}}, "config_bundle.id"),
    ],
)
async def test_a_bad_id_field_says_so_in_words_naming_the_field(
    rt: Runtime, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await rt.create_worker(**fields)
    assert info.value.message == invalid_id_message(field)
    assert "regex" not in info.value.message and "letters, digits" in info.value.message
    assert info.value.details == {"field": field}
    assert (await rt.summary()).workers.total == 0


async def test_a_bad_worker_id_argument_has_the_same_words(rt: Runtime) -> None:
    with pytest.raises(InvalidWorkerIdError) as info:
        await rt.get_worker("bad id")
    assert info.value.message == invalid_id_message("worker_id")
    with pytest.raises(InvalidRequestError) as listed:
        await rt.list_workers(after="bad id")
    assert (listed.value.message, listed.value.details) == (invalid_id_message("after"), {"field": "after"})


async def test_duplicate_worker_id_is_worker_exists_and_changes_nothing(rt: Runtime) -> None:
    first = await rt.create_worker(worker_id="dup", display_name="first")
    with pytest.raises(WorkerExistsError):
        await rt.create_worker(worker_id="dup", display_name="second")
    assert await rt.get_worker("dup") == first


async def test_unknown_profile_and_missing_capability_are_refused(rt: Runtime) -> None:
    with pytest.raises(UnknownProfileError):
        await rt.create_worker(profile={"kind": "named", "name": "nope"})
    with pytest.raises(UnknownProfileError):
        await rt.create_worker(profile={"kind": "builtin", "name": "command"})  # command needs options
    with pytest.raises(UnsupportedCapabilityError) as info:
        await rt.create_worker(requested_capabilities=[{"name": "browser"}])
    assert info.value.details["capability"] == "browser"
    assert (await rt.summary()).workers.total == 0


async def test_a_str_subclass_id_finds_its_worker(rt: Runtime) -> None:
    class Known(StrEnum):
        W1 = "w1"

    await rt.create_worker(worker_id="w1")
    assert (await rt.get_worker(Known.W1)).worker_ref.worker_id == "w1"
    ack = await rt.send_input(Known.W1, "hi")
    assert (await rt.wait_for_run(Known.W1, ack.run_id)).status == "completed"


async def test_invalid_and_unknown_ids_on_every_worker_method(rt: Runtime) -> None:
    bad_ids: list[Any] = ["..", "a/b", "", "a\n", "x" * 129, None, 5, ["w"]]
    for bad in bad_ids:
        with pytest.raises(InvalidWorkerIdError):
            await rt.get_worker(bad)
        with pytest.raises(InvalidWorkerIdError):
            await rt.send_input(bad, "hi")
        with pytest.raises(InvalidWorkerIdError):
            await rt.stop_worker(bad)
    for call in (
        rt.get_worker("ghost"),
        rt.send_input("ghost", "hi"),
        rt.cancel_worker("ghost"),
        rt.stop_worker("ghost"),
        rt.delete_worker("ghost"),
        rt.transcript("ghost"),
        rt.get_run("ghost", "run-1"),
    ):
        with pytest.raises(WorkerNotFoundError):
            await call


async def test_list_is_ordered_by_id_and_pages_with_after_without_overlap(rt: Runtime) -> None:
    ids = [f"w{n:03d}" for n in range(25)]
    for wid in reversed(ids):
        await rt.create_worker(worker_id=wid)
    seen: list[str] = []
    after = None
    while True:
        page = await rt.list_workers(limit=10, after=after)
        seen += [w.worker_ref.worker_id for w in page.workers]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids


async def test_list_filters_by_status(rt: Runtime) -> None:
    for wid in ["a", "b", "c", "d"]:
        await rt.create_worker(worker_id=wid)
    await rt.stop_worker("b")
    await rt.stop_worker("d")
    stopped = await rt.list_workers(status="stopped", limit=1)
    assert [w.worker_ref.worker_id for w in stopped.workers] == ["b"]
    assert stopped.next_after == "b"
    rest = await rt.list_workers(status="stopped", after="b")
    assert [w.worker_ref.worker_id for w in rest.workers] == ["d"] and rest.next_after is None
    assert [w.worker_ref.worker_id for w in (await rt.list_workers(status="idle")).workers] == ["a", "c"]


async def test_list_limits_are_checked(rt: Runtime) -> None:
    with pytest.raises(LimitTooLargeError):
        await rt.list_workers(limit=1001)
    for bad in (0, -1):
        with pytest.raises(InvalidRequestError):
            await rt.list_workers(limit=bad)
    with pytest.raises(InvalidRequestError):
        await rt.list_workers(status="sleeping")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        await rt.list_workers(after="../x")


async def test_delete_needs_a_stopped_worker_then_removes_it_but_keeps_events(rt: Runtime) -> None:
    await rt.create_worker(worker_id="gone")
    await rt.send_input("gone", "hi")
    with pytest.raises(WorkerNotStoppedError):
        await rt.delete_worker("gone")
    await rt.stop_worker("gone")
    ack = await rt.delete_worker("gone")
    assert ack.status == "deleted" and ack.cancelled_run_id is None and ack.event_id is not None
    with pytest.raises(WorkerNotFoundError):
        await rt.get_worker("gone")
    events = (await rt.read_events(worker_id="gone")).events
    assert events[0].kind == "worker_created" and events[-1].kind == "worker_deleted"
    assert events[-1].id == ack.event_id
    await rt.create_worker(worker_id="gone")  # the id is free again
    assert (await rt.transcript("gone")).total_items == 0


async def test_capacity_counts_stopped_workers_until_deleted() -> None:
    async with Runtime(limits=Limits(max_workers=2)) as rt:
        await rt.create_worker(worker_id="a")
        await rt.create_worker(worker_id="b")
        await rt.stop_worker("b")
        with pytest.raises(CapacityExceededError):
            await rt.create_worker(worker_id="c")
        await rt.delete_worker("b")
        await rt.create_worker(worker_id="c")
        assert (await rt.summary()).workers.total == 2


async def test_summary_counts_workers_and_lists_profiles(rt: Runtime) -> None:
    await rt.create_worker(worker_id="a")
    await rt.create_worker(worker_id="b")
    await rt.stop_worker("b")
    summary = await rt.summary()
    assert (summary.workers.idle, summary.workers.busy, summary.workers.stopped, summary.workers.total) == (1, 0, 1, 2)
    assert summary.runtime_id == "rt-test" and summary.display_name == "Test"
    assert summary.status == "running"
    assert summary.store.kind == "memory" and summary.store.path is None and summary.store.fsync is None
    assert {"echo", "command", "gate"} <= set(summary.capabilities.engines)
    assert {"default", "gate", "builtin:echo"} <= set(summary.capabilities.profiles)
    assert "builtin:command" not in summary.capabilities.profiles
    assert summary.capabilities.default_profile == "default"
    assert summary.limits == Limits()


async def test_calls_before_start_and_after_close_are_runtime_unavailable() -> None:
    rt = Runtime()
    with pytest.raises(RuntimeUnavailableError):
        await rt.create_worker()
    with pytest.raises(RuntimeUnavailableError):
        await rt.summary()  # its id is not known before start
    with pytest.raises(RuntimeUnavailableError):
        await rt.diagnostics()
    async with rt:
        await rt.create_worker(worker_id="w")
    assert rt.status == "closed"
    with pytest.raises(RuntimeUnavailableError):
        await rt.send_input("w", "hi")
    with pytest.raises(RuntimeUnavailableError):
        await rt.get_worker("w")
