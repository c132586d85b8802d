"""What the Runtime keeps and hands to its store: compact records with numeric times.

These are internal shapes, not wire shapes: times are floats and event data are small structs, so an idle
Worker costs a few hundred bytes. `to_wire` helpers build the wire structs of `models` on read.

Three modules hold the shapes: `models` the domain structs a caller is shown (refs, runs, workers, transcript
entries, events, diagnostics), `wire` the request bodies, acks, pages and envelopes around them, and `records` the
compact internal records the Runtime keeps and hands to its store (never sent as they are).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .models import (
    CapabilityRequest,
    ConfigBundleRef,
    Event,
    Intent,
    PendingRequest,
    ProfileSelector,
    ResourceRef,
    RunError,
    RunInfo,
    TokenUsage,
    TranscriptEntry,
    WorkerRef,
)
from .times import format_time

__all__ = [
    "EventRecord",
    "InputKeyRecord",
    "InputAcceptedData",
    "QueuedInput",
    "RunStartedData",
    "InputRequestedData",
    "InputRespondedData",
    "RequestRecord",
    "RunEndedData",
    "RunRecord",
    "RuntimeStartedData",
    "TranscriptAppendedData",
    "TranscriptRecord",
    "WorkerCreatedData",
    "WorkerExtra",
    "WorkerRecord",
    "WorkerStoppedData",
    "EMPTY_DATA",
    "EVENT_DATA_TYPES",
    "EmptyData",
]


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A run's request for input, open (`outcome` None) or closed with how it closed and the answer.

    `event_id` is the ``input_requested`` event that opened it (its `request_id` is ``req-<event_id>``);
    `closed_event_id` the ``input_responded`` event that closed it, and `response_id` the answer's own key (so a
    repeat of the answer gets the first ack again, also after a restart: the run's record keeps its requests).
    """

    request_id: str
    kind: str
    prompt: str
    data: Any = None
    created_at: float
    expires_at: float | None
    event_id: int
    outcome: str | None = None
    approved: bool | None = None
    content: str | None = None
    response_id: str | None = None
    closed_event_id: int | None = None

    def to_wire(self) -> PendingRequest:
        return PendingRequest(
            request_id=self.request_id,
            kind=self.kind,  # type: ignore[arg-type]  # only RequestKind values are ever stored
            prompt=self.prompt,
            data=self.data,
            created_at=format_time(self.created_at),
            expires_at=format_time(self.expires_at) if self.expires_at is not None else None,
        )


class RunRecord(msgspec.Struct, kw_only=True, gc=False):
    """A run as the Runtime tracks it; mutated only by the Runtime until it is terminal.

    A run's transcript entries are contiguous: its input's at `input_sequence`, then its outputs. `entries` counts
    them (the input's included) once the run has ended, so a page of one run's entries is found without a scan; it
    is None while the run is active (the Worker's `transcript_len` bounds them) and in a run recorded by a version
    that did not count them.
    """

    run_id: str
    input_sequence: int | None  # None for a run that ended queued (it never started, so it has no entries)
    started_at: float
    status: str = "running"
    ended_at: float | None = None
    error: RunError | None = None
    usage: TokenUsage | None = None
    entries: int | None = None
    #: The run's requests for input, oldest first; only the newest may be open (while the run is ``waiting``).
    requests: tuple[RequestRecord, ...] = ()

    def to_wire(self) -> RunInfo:
        requests = self.requests
        return RunInfo(
            run_id=self.run_id,
            status=self.status,
            input_sequence=self.input_sequence,
            started_at=format_time(self.started_at),
            ended_at=format_time(self.ended_at) if self.ended_at is not None else None,
            error=self.error,
            usage=self.usage,
            pending_request=requests[-1].to_wire() if requests and self.status == "waiting" else None,
        )


class WorkerExtra(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The rarely set fields of a create request, kept apart so that most Workers pay one pointer for them."""

    config_bundle: ConfigBundleRef | None = None
    requested_capabilities: tuple[CapabilityRequest, ...] = ()
    workspace_refs: tuple[ResourceRef, ...] = ()
    mount_refs: tuple[ResourceRef, ...] = ()


class QueuedInput(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An input accepted with ``on_busy="enqueue"`` while its Worker was busy: its run is ``queued`` until it starts.

    Only what is small is kept here, in the Worker's state (so in every log record of a change of it): the content
    is written once, with the input's ``input_accepted`` (`Batch.queued_content`), kept by the store until the run
    starts or ends without starting and handed back at open (`StoreState.queued_content`); never in served event
    data. Its transcript entry is appended when its run starts. `accepted_at` is the run's `started_at` while it is
    queued; `event_id` is its ``input_accepted``.
    """

    run_id: str
    input_id: str | None
    kind: str
    accepted_at: float
    event_id: int

    def to_run(self) -> RunRecord:
        """The run as it is while queued."""
        return RunRecord(run_id=self.run_id, input_sequence=None, started_at=self.accepted_at, status="queued")


class WorkerRecord(msgspec.Struct, kw_only=True, gc=False):
    """One Worker's state; the store persists it, the Runtime keeps it in memory."""

    worker_id: str
    profile: str
    intent: Intent
    profile_selector: ProfileSelector
    created_at: float
    updated_at: float
    display_name: str | None = None
    extra: WorkerExtra | None = None
    status: str = "idle"
    transcript_len: int = 0
    last_event_id: int = 0
    active_run: RunRecord | None = None
    last_run: RunRecord | None = None
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Runs waiting behind the active one, in acceptance order (they start first to last).
    queued: tuple[QueuedInput, ...] = ()


class TranscriptRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One transcript entry with a numeric time."""

    sequence: int
    role: str
    content: str
    run_id: str | None
    created_at: float
    event_id: int

    def to_wire(self) -> TranscriptEntry:
        return TranscriptEntry(
            sequence=self.sequence,
            role=self.role,  # type: ignore[arg-type]  # only TranscriptRole values are ever stored
            content=self.content,
            run_id=self.run_id,
            created_at=format_time(self.created_at),
            event_id=self.event_id,
        )


# --- event data, one small struct per kind -------------------------------------------------------------------


class EmptyData(msgspec.Struct, frozen=True, gc=False):
    """``{}``"""


EMPTY_DATA = EmptyData()


class RuntimeStartedData(msgspec.Struct, frozen=True, gc=False):
    version: str


class WorkerCreatedData(msgspec.Struct, frozen=True, gc=False):
    profile: str


class InputAcceptedData(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """``{input_sequence, input_id, kind}``; a queued input's is ``{input_sequence: null, input_id, kind,
    queued: true}`` (its content is never in the event's data)."""

    input_sequence: int | None
    input_id: str | None
    kind: str
    queued: bool = False


class RunStartedData(msgspec.Struct, frozen=True, gc=False):
    """Data of ``run_started`` (a queued run starts): its input's transcript entry is appended with this event."""

    input_sequence: int
    input_id: str | None
    kind: str


class TranscriptAppendedData(msgspec.Struct, frozen=True, gc=False):
    sequence: int
    role: str


class RunEndedData(msgspec.Struct, frozen=True, gc=False):
    """Data of the ``run_<status>`` events: the terminal run (numeric times inside, formatted on read)."""

    run: RunRecord
    reason: str | None = None

    def to_builtins(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run": msgspec.to_builtins(self.run.to_wire())}
        if self.reason is not None:
            data["reason"] = self.reason
        return data


class InputRequestedData(msgspec.Struct, frozen=True, gc=False):
    """Data of ``input_requested``: the request opened (served as ``{"request": PendingRequest}``)."""

    request: RequestRecord

    def to_builtins(self) -> dict[str, Any]:
        return {"request": msgspec.to_builtins(self.request.to_wire())}


class InputRespondedData(msgspec.Struct, frozen=True, gc=False):
    """Data of ``input_responded``: how a request closed, and the answer."""

    request_id: str
    outcome: str
    approved: bool | None
    content: str | None


class WorkerStoppedData(msgspec.Struct, frozen=True, gc=False):
    reason: str | None
    cancelled_run_id: str | None


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One event with a numeric time; `data` is a kind's data struct (or a plain dict read back from disk)."""

    id: int
    kind: str
    worker_id: str | None
    run_id: str | None
    created_at: float
    data: Any

    def to_wire(self, runtime_id: str) -> Event:
        data = self.data
        return Event(
            id=self.id,
            kind=self.kind,
            worker_ref=WorkerRef(runtime_id=runtime_id, worker_id=self.worker_id) if self.worker_id else None,
            run_id=self.run_id,
            created_at=format_time(self.created_at),
            data=data
            if isinstance(data, dict)
            else data.to_builtins()
            if isinstance(data, RunEndedData | InputRequestedData)
            else msgspec.to_builtins(data),
        )


class InputKeyRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """An accepted `input_id`: enough to answer a repeat with the first ack, and to spot other content."""

    worker_id: str
    input_id: str
    digest: bytes
    run_id: str
    input_sequence: int | None  # None when the input was queued (its first ack said so)
    event_id: int
    created_at: float
    queued: bool = False


#: The data struct of each event kind, for stores that decode events they read back.
EVENT_DATA_TYPES: dict[str, type[msgspec.Struct]] = {
    "runtime_started": RuntimeStartedData,
    "worker_created": WorkerCreatedData,
    "input_accepted": InputAcceptedData,
    "run_started": RunStartedData,
    "transcript_appended": TranscriptAppendedData,
    "run_completed": RunEndedData,
    "run_cancelled": RunEndedData,
    "run_failed": RunEndedData,
    "run_timed_out": RunEndedData,
    "run_interrupted": RunEndedData,
    "worker_stopped": WorkerStoppedData,
    "worker_deleted": EmptyData,
    "runtime_stopping": EmptyData,
    "input_requested": InputRequestedData,
    "input_responded": InputRespondedData,
}
