"""Record to wire: the worker ref, summary and detail a caller is shown of a Worker's committed record."""

from __future__ import annotations

from typing import Any

from .models import UsageTotals, WorkerDetail, WorkerRef, WorkerSummary
from .records import WorkerExtra, WorkerRecord
from .times import format_time

__all__ = ["worker_detail", "worker_summary"]

_NO_EXTRA = WorkerExtra()


def _summary_fields(record: WorkerRecord, ref: WorkerRef, runtime_name: str) -> dict[str, Any]:
    """The fields a worker summary and a worker detail share."""
    return {
        "worker_ref": ref,
        "display_name": record.display_name,
        "display_ref": f"{record.display_name or record.worker_id}@{runtime_name}",
        "status": record.status,
        "profile": record.profile,
        "created_at": format_time(record.created_at),
        "updated_at": format_time(record.updated_at),
        "active_run": record.active_run.to_wire() if record.active_run is not None else None,
    }


def worker_summary(record: WorkerRecord, ref: WorkerRef, runtime_name: str) -> WorkerSummary:
    """A Worker as a page of workers lists it; `runtime_name` is the Runtime's display name."""
    return WorkerSummary(**_summary_fields(record, ref, runtime_name))


def worker_detail(record: WorkerRecord, ref: WorkerRef, runtime_name: str) -> WorkerDetail:
    """A Worker in full, as `get_worker` and `create_worker` answer."""
    extra = record.extra or _NO_EXTRA
    return WorkerDetail(
        **_summary_fields(record, ref, runtime_name),
        intent=record.intent,
        profile_selector=record.profile_selector,
        config_bundle=extra.config_bundle,
        requested_capabilities=list(extra.requested_capabilities),
        workspace_refs=list(extra.workspace_refs),
        mount_refs=list(extra.mount_refs),
        last_run=record.last_run.to_wire() if record.last_run is not None else None,
        transcript_len=record.transcript_len,
        last_event_id=record.last_event_id,
        usage=UsageTotals(runs=record.runs, input_tokens=record.input_tokens, output_tokens=record.output_tokens),
        queued_runs=[queued.run_id for queued in record.queued],
    )
