"""Wire bodies for the client's respx tests, built from core's structs so they match the contract."""

from __future__ import annotations

from typing import Any

import msgspec

from worker_runtime_core import (
    AssistantIntent,
    InputAck,
    RunInfo,
    RuntimeDefaultProfile,
    UsageTotals,
    WorkerAck,
    WorkerDetail,
    WorkerRef,
)

BASE = "http://rt.test"
T0 = "2026-11-24T12:00:00.000000Z"


def ref(worker_id: str = "w1", runtime_id: str = "rt-1") -> WorkerRef:
    return WorkerRef(runtime_id=runtime_id, worker_id=worker_id)


def runtime_body(runtime_id: str = "rt-1", *, max_wait_s: float = 30) -> dict[str, Any]:
    return {
        "runtime": {
            "runtime_id": runtime_id,
            "display_name": runtime_id,
            "version": "0.2.0",
            "status": "running",
            "started_at": T0,
            "store": {"kind": "memory", "path": None, "fsync": None},
            "workers": {"idle": 0, "busy": 0, "stopped": 0, "total": 0},
            "limits": {
                "default_page": 100,
                "max_page": 1000,
                "max_body_bytes": 1048576,
                "max_input_bytes": 262144,
                "max_wait_s": max_wait_s,
                "max_workers": 100000,
                "operation_timeout_s": 10,
                "idempotency_ttl_s": 86400,
                "event_retention": 0,
            },
            "capabilities": {"engines": ["echo"], "profiles": ["default"], "default_profile": "default"},
            "usage": {"runs": 0, "input_tokens": 0, "output_tokens": 0},
        }
    }


def run(run_id: str = "run-3", status: str = "completed") -> RunInfo:
    return RunInfo(
        run_id=run_id,
        status=status,  # type: ignore[arg-type]
        input_sequence=0,
        started_at=T0,
        ended_at=None if status == "running" else T0,
        error=None,
        usage=None,
    )


def worker(worker_id: str = "w1", last_event_id: int = 2) -> WorkerDetail:
    return WorkerDetail(
        worker_ref=ref(worker_id),
        display_name=None,
        display_ref=f"{worker_id}@rt-1",
        status="idle",
        profile="default",
        created_at=T0,
        updated_at=T0,
        active_run=None,
        intent=AssistantIntent(),
        profile_selector=RuntimeDefaultProfile(),
        config_bundle=None,
        requested_capabilities=[],
        workspace_refs=[],
        mount_refs=[],
        last_run=None,
        transcript_len=0,
        last_event_id=last_event_id,
        usage=UsageTotals(runs=0, input_tokens=0, output_tokens=0),
    )


def body(**envelope: Any) -> dict[str, Any]:
    """A success body: ``body(worker=worker())`` -> ``{"worker": {...}}``."""
    return {k: msgspec.to_builtins(v) for k, v in envelope.items()}


def input_ack(run_id: str = "run-3", duplicate: bool = False) -> InputAck:
    return InputAck(worker_ref=ref(), run_id=run_id, input_sequence=0, event_id=3, duplicate=duplicate)


def worker_ack(status: str = "idle", cancelled: str | None = None, event_id: int | None = None) -> WorkerAck:
    return WorkerAck(worker_ref=ref(), status=status, cancelled_run_id=cancelled, event_id=event_id)  # type: ignore[arg-type]


def error(
    code: str, message: str = "nope", details: dict[str, Any] | None = None, retryable: bool = False
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}, "retryable": retryable}}


def event(
    event_id: int, kind: str = "worker_created", run_id: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": event_id,
        "kind": kind,
        "worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"},
        "run_id": run_id,
        "created_at": T0,
        "data": data or {},
    }
