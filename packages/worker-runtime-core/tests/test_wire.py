"""The shared wire structs decode what a newer (v1.1) server sends: new kinds, statuses, codes and fields."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

import worker_runtime_core as core
from worker_runtime_core import wire

T0 = "2026-11-24T12:00:00.000000Z"
REF = {"runtime_id": "rt-1", "worker_id": "w1"}

#: Every body a server sends, and every request body a server decodes.
RESPONSES = (
    core.RuntimeEnvelope,
    core.WorkersPage,
    core.WorkerEnvelope,
    core.InputAckEnvelope,
    core.WorkerAckEnvelope,
    core.RunEnvelope,
    core.TranscriptEnvelope,
    core.EventPage,
    core.RespondAckEnvelope,
    core.RequestsPage,
    core.DiagnosticsEnvelope,
    core.ErrorEnvelope,
)
REQUESTS = (core.CreateWorkerRequest, core.InputRequest, core.StopRequest, core.CancelRequest, core.RespondRequest)


def run_body(status: str, input_sequence: int | None = 0, **more: Any) -> dict[str, Any]:
    return {
        "run_id": "run-7",
        "status": status,
        "input_sequence": input_sequence,
        "started_at": T0,
        "ended_at": None,
        "error": None,
        "usage": None,
        **more,
    }


PENDING = {
    "request_id": "req-1",
    "kind": "approval",
    "prompt": "delete it?",
    "data": {},
    "created_at": T0,
    "expires_at": None,
}


def _structs(type_: Any, seen: set[type[Any]]) -> set[type[Any]]:
    """Every Struct type reachable from `type_` (fields, unions, lists, subclasses of a field's type)."""
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        if type_ in seen:
            return seen
        seen.add(type_)
        for hint in typing.get_type_hints(type_, include_extras=True).values():
            _structs(hint, seen)
        return seen
    for arg in typing.get_args(type_):
        _structs(arg, seen)
    return seen


def test_no_response_struct_forbids_unknown_fields_and_every_request_body_does() -> None:
    responses: set[type[Any]] = set()
    for envelope in RESPONSES:
        _structs(envelope, responses)
    assert core.LimitsInfo in responses and core.Limits not in responses
    assert {s.__name__ for s in responses if s.__struct_config__.forbid_unknown_fields} == set()
    assert {s.__name__ for s in responses if s.__struct_config__.omit_defaults} == set()  # every field is sent
    for request in REQUESTS:
        assert request.__struct_config__.forbid_unknown_fields, request.__name__


def test_a_run_with_a_status_this_version_does_not_know_decodes_with_its_status() -> None:
    data = {"run": run_body("paused", pending_request=None)}
    run = msgspec.json.decode(msgspec.json.encode(data), type=core.RunEnvelope).run
    assert run.status == "paused" and run.status not in core.TERMINAL_RUN_STATUSES
    assert "paused" not in core.KNOWN_RUN_STATUSES
    queued = msgspec.convert({"run": run_body("queued", input_sequence=None)}, core.RunEnvelope).run
    assert (queued.status, queued.input_sequence) == ("queued", None)


def test_a_waiting_run_decodes_its_pending_request_typed() -> None:
    data = {"run": run_body("waiting", pending_request=PENDING)}
    run = msgspec.json.decode(msgspec.json.encode(data), type=core.RunEnvelope).run
    assert run.status == "waiting" and "waiting" in core.KNOWN_RUN_STATUSES
    assert run.pending_request == core.PendingRequest(**PENDING)
    assert msgspec.convert({"run": run_body("running")}, core.RunEnvelope).run.pending_request is None


def test_an_event_of_a_kind_this_version_does_not_know_decodes_with_kind_and_data() -> None:
    page = {
        "events": [
            {
                "id": 41,
                "kind": "run_started",
                "worker_ref": REF,
                "run_id": "run-7",
                "created_at": T0,
                "data": {"input_sequence": 4, "input_id": "in-1", "kind": "user"},
                "entry": None,
            },
            {
                "id": 42,
                "kind": "tool_called",
                "worker_ref": REF,
                "run_id": "run-7",
                "created_at": T0,
                "data": {"call": {"id": "c1", "name": "read_file"}},
            },
        ],
        "next_after": 42,
        "has_more": False,
    }
    events = msgspec.json.decode(msgspec.json.encode(page), type=core.EventPage).events
    assert [(e.kind, e.data) for e in events] == [
        ("run_started", {"input_sequence": 4, "input_id": "in-1", "kind": "user"}),
        ("tool_called", {"call": {"id": "c1", "name": "read_file"}}),
    ]
    assert "tool_called" not in core.KNOWN_EVENT_KINDS
    assert {"run_started", "input_requested", "input_responded"} <= set(core.KNOWN_EVENT_KINDS)


def test_a_queued_input_ack_with_a_null_sequence_and_new_fields_decodes() -> None:
    body = {
        "ack": {
            "worker_ref": REF,
            "run_id": "run-8",
            "input_sequence": None,
            "event_id": 43,
            "duplicate": False,
            "queued": True,
        }
    }
    ack = msgspec.json.decode(msgspec.json.encode(body), type=core.InputAckEnvelope).ack
    assert (ack.run_id, ack.input_sequence, ack.duplicate) == ("run-8", None, False)


def test_a_runtime_summary_with_new_limits_decodes_but_the_limits_table_still_refuses_them() -> None:
    new_limits = {"max_tool_steps": 20}  # a limit of a newer server
    limits = {**msgspec.to_builtins(core.Limits()), **new_limits}
    summary = {
        "runtime": {
            "runtime_id": "rt-1",
            "display_name": "rt-1",
            "version": "0.2.0",
            "status": "running",
            "started_at": T0,
            "store": {"kind": "memory", "path": None, "fsync": None},
            "workers": {"idle": 0, "busy": 0, "stopped": 0, "total": 0},
            "limits": limits,
            "capabilities": {"engines": ["echo", "ask"], "profiles": ["default"], "default_profile": "default"},
            "usage": {"runs": 0, "input_tokens": 0, "output_tokens": 0},
        }
    }
    decoded = msgspec.json.decode(msgspec.json.encode(summary), type=core.RuntimeEnvelope).runtime
    assert decoded.limits.max_page == 1000 and decoded.capabilities.engines == ["echo", "ask"]
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(limits, core.Limits)


def test_a_worker_and_a_transcript_with_new_fields_decode() -> None:
    worker = msgspec.to_builtins(
        core.WorkerDetail(
            worker_ref=core.WorkerRef(runtime_id="rt-1", worker_id="w1"),
            display_name=None,
            display_ref="w1@rt-1",
            status="busy",
            profile="default",
            created_at=T0,
            updated_at=T0,
            active_run=None,
            intent=core.AssistantIntent(),
            profile_selector=core.RuntimeDefaultProfile(),
            config_bundle=None,
            requested_capabilities=[],
            workspace_refs=[],
            mount_refs=[],
            last_run=None,
            transcript_len=1,
            last_event_id=2,
            usage=core.UsageTotals(runs=0, input_tokens=0, output_tokens=0),
        )
    )
    worker["queued_runs"] = ["run-9"]
    worker["active_run"] = run_body("waiting", pending_request=PENDING)
    decoded = msgspec.convert({"worker": worker}, core.WorkerEnvelope).worker
    assert decoded.active_run is not None and decoded.active_run.status == "waiting"
    entry = {"sequence": 0, "role": "assistant", "content": "", "run_id": "run-7", "created_at": T0, "event_id": 3}
    page = {"worker_ref": REF, "start": 0, "limit": 100, "total_items": 1, "next_start": None}
    page["items"] = [{**entry, "data": {"tool_calls": [{"id": "c1", "name": "read_file", "arguments": "{}"}]}}]
    transcript = msgspec.convert({"transcript": page}, core.TranscriptEnvelope).transcript
    assert transcript.items[0].content == "" and transcript.items[0].event_id == 3


def test_a_new_error_code_decodes_and_keeps_its_code_and_retryable() -> None:
    body = {"error": {"code": "queue_paused", "message": "full", "details": {"max_queue": 100}, "retryable": True}}
    error = msgspec.json.decode(msgspec.json.encode(body), type=core.ErrorEnvelope).error
    exc = core.error_from_wire(error.code, error.message, error.details, status=409, retryable=error.retryable)
    assert isinstance(exc, core.WorkerRuntimeError) and type(exc).__mro__[1] is core.WorkerRuntimeError
    assert (exc.code, exc.retryable, exc.status, exc.details) == ("queue_paused", True, 409, {"max_queue": 100})


def test_request_bodies_still_refuse_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `priority`"):
        msgspec.json.decode(b'{"content": "hi", "priority": "high"}', type=wire.InputRequest)
