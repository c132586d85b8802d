"""Request bodies, acks, pages and the response envelopes of the HTTP wire contract.

Server and client share these structs; decoders are built once. Unknown values are sent as ``null``
(no `omit_defaults`), so every field is always present.

Three modules hold the shapes: `models` the domain structs a caller is shown (refs, runs, workers, transcript
entries, events, diagnostics), `wire` the request bodies, acks, pages and envelopes around them, and `records` the
compact internal records the Runtime keeps and hands to its store (never sent as they are).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .ids import IdStr, InputId, RunId, WorkerId
from .models import (
    AssistantIntent,
    CapabilityRequest,
    ConfigBundleRef,
    Diagnostic,
    Event,
    Intent,
    PendingRequest,
    ProfileSelector,
    ResourceRef,
    RunInfo,
    RuntimeDefaultProfile,
    RuntimeSummary,
    StreamEvent,
    TranscriptEntry,
    WorkerDetail,
    WorkerRef,
    WorkerSummary,
)

__all__ = [
    "AckEnvelope",
    "CancelRequest",
    "CreateWorkerRequest",
    "CursorAheadDetails",
    "CursorExpiredDetails",
    "DiagnosticsEnvelope",
    "ERROR_DETAILS_BY_CODE",
    "ErrorBody",
    "ErrorEnvelope",
    "EventPage",
    "InputAck",
    "InputAckEnvelope",
    "InputKind",
    "OnBusy",
    "QueueFullDetails",
    "InputRequest",
    "OpenRequest",
    "RequestsPage",
    "RespondAck",
    "RespondAckEnvelope",
    "RespondRequest",
    "RunEnvelope",
    "RuntimeEnvelope",
    "StopRequest",
    "StoreCorruptDetails",
    "StreamPage",
    "TranscriptEnvelope",
    "TranscriptPage",
    "WorkerAck",
    "WorkerAckEnvelope",
    "WorkerBusyDetails",
    "WorkerEnvelope",
    "WorkersPage",
]

InputKind = Literal["user", "system"]
#: What input to a busy Worker does: refused (`worker_busy`), queued behind the active run, or interrupting it.
OnBusy = Literal["reject", "enqueue", "interrupt"]


class CreateWorkerRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/workers``; every field is optional."""

    worker_id: WorkerId | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    intent: Intent = AssistantIntent()
    profile: ProfileSelector = RuntimeDefaultProfile()
    config_bundle: ConfigBundleRef | None = None
    requested_capabilities: list[CapabilityRequest] = msgspec.field(default_factory=list)
    workspace_refs: list[ResourceRef] = msgspec.field(default_factory=list)
    mount_refs: list[ResourceRef] = msgspec.field(default_factory=list)


class InputRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/workers/{worker_id}/input``; `content` is 1 byte to `max_input_bytes`."""

    content: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="1 byte to `max_input_bytes` bytes of UTF-8. `maxLength` bounds the characters; a string "
            "within it whose UTF-8 is longer than `max_input_bytes` (multi-byte characters) is 422 `invalid_input`.",
        ),
    ]
    kind: InputKind = "user"
    input_id: InputId | None = None
    on_busy: Annotated[
        OnBusy,
        msgspec.Meta(
            description="What happens when a run is active: `reject` (409 `worker_busy`), `enqueue` (queued behind "
            "it: `queued: true`, `input_sequence: null` until it starts) or `interrupt` (the active run is "
            "cancelled with reason `interrupted_by_input`, then this one starts). Not compared on a repeated "
            "`input_id`."
        ),
    ] = "reject"


class StopRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/workers/{worker_id}/stop`` (may be empty)."""

    reason: str | None = None


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/workers/{worker_id}/cancel`` (may be empty); a `run_id` cancels only that run.

    A `run_id` that breaks the id pattern is 422 ``invalid_request``; a well-formed one that names no active run
    is a no-op.
    """

    reason: str | None = None
    run_id: IdStr | None = None


class RespondRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/workers/{worker_id}/runs/{run_id}/respond``: the answer to the run's request `request_id`.

    An ``approval`` needs `approved` (and may carry `content` as a comment); a ``question`` needs `content` and takes
    no `approved`; otherwise 422 ``invalid_request``. `response_id` makes the call safe to repeat: the same one
    with the same answer gets the first ack again (``duplicate: true``), with another answer 409
    ``idempotency_conflict``.
    """

    request_id: IdStr
    approved: bool | None = None
    content: str | None = None
    response_id: IdStr | None = None


class RespondAck(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a respond, sent once its ``input_responded`` event (`event_id`) is durable; `status` is the
    run's status after it (``running``)."""

    worker_ref: WorkerRef
    run_id: RunId
    request_id: IdStr
    status: str
    event_id: int
    duplicate: bool


class OpenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One open request for input of a Runtime: the Worker and run that asked, and the request."""

    worker_ref: WorkerRef
    run_id: RunId
    request: PendingRequest


class RequestsPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of open requests ordered by the event id that opened them (itself the envelope); `next_after` is the
    `after` of the next page (the last request's opening event id), null on the last page."""

    requests: list[OpenRequest]
    next_after: int | None


class InputAck(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to an accepted input, sent once its transcript entry and event are durable.

    `input_sequence` is the transcript sequence of the input's own entry, null while the input is `queued` behind
    the active run (``on_busy="enqueue"``): its entry is appended when its run starts (`run_started`).
    """

    worker_ref: WorkerRef
    run_id: RunId
    input_sequence: int | None
    event_id: int
    duplicate: bool
    queued: bool = False


class WorkerAck(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to stop, cancel and delete; `event_id` is null when the call changed nothing. `status` is the
    Worker's status after the call (`busy` when a queued run started in place of a cancelled one);
    `cancelled_run_id` the run it ended (for a stop, the active run, else the first queued one), and
    `cancelled_run_ids` every run a stop ended (the active one and every queued one)."""

    worker_ref: WorkerRef
    status: Literal["idle", "busy", "stopped", "deleted"]
    cancelled_run_id: RunId | None
    event_id: int | None
    cancelled_run_ids: list[RunId] = msgspec.field(default_factory=list)


class TranscriptPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a transcript; `next_start` is null when no entries remain."""

    worker_ref: WorkerRef
    start: int
    limit: int
    total_items: int
    items: list[TranscriptEntry]
    next_start: int | None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of events (itself the envelope); `next_after` is the last id returned, or the request's `after`."""

    events: list[Event]
    next_after: int
    has_more: bool


class StreamPage(msgspec.Struct, frozen=True, kw_only=True):
    """What an event stream reads at once (`Runtime.read_stream`): events with their entries inline, and
    `next_after`, the newest id read (matching or not), so the next read starts after everything this one looked at.
    """

    events: list[StreamEvent]
    next_after: int
    has_more: bool


class WorkersPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of Workers ordered by worker id (itself the envelope); `next_after` is null on the last page."""

    workers: list[WorkerSummary]
    next_after: WorkerId | None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong: the wire `code`, a sentence, details and whether a retry can succeed."""

    code: str
    message: str
    details: dict[str, Any]
    retryable: bool


# --- error details by code (`ErrorBody.details` stays a dict: these describe it) --------------------------------


class WorkerBusyDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of `worker_busy`: the run that is active."""

    run_id: RunId


class QueueFullDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of `queue_full`: the limit of runs queued behind the active run, and that run."""

    max_queue: int
    run_id: RunId | None


class CursorExpiredDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of `cursor_expired`: the oldest event id still kept (read again from just below it)."""

    oldest_id: int


class CursorAheadDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of `invalid_request` for an events cursor (`after`) above the newest id the log ever served (a
    memory store restarted, or another runtime): the newest id."""

    newest_id: int


class StoreCorruptDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of `store_corrupt`: the damaged file and the byte offset of the damage (-1 when unknown)."""

    path: str
    offset: int


#: The shape of `ErrorBody.details` where it has fixed fields: `worker_busy`, `cursor_expired`, `store_corrupt`, and
#: `invalid_request` for an events cursor above the newest id (its other details name the ``field`` or ``path``
#: that was wrong). The details of other codes are an object of their own.
ERROR_DETAILS_BY_CODE: dict[str, type[msgspec.Struct]] = {
    "worker_busy": WorkerBusyDetails,
    "queue_full": QueueFullDetails,
    "cursor_expired": CursorExpiredDetails,
    "invalid_request": CursorAheadDetails,
    "store_corrupt": StoreCorruptDetails,
}


# --- envelopes -----------------------------------------------------------------------------------------------


class RuntimeEnvelope(msgspec.Struct, frozen=True):
    """``{"runtime": ...}``"""

    runtime: RuntimeSummary


class WorkerEnvelope(msgspec.Struct, frozen=True):
    """``{"worker": ...}``"""

    worker: WorkerDetail


class InputAckEnvelope(msgspec.Struct, frozen=True):
    """``{"ack": ...}`` for input."""

    ack: InputAck


class WorkerAckEnvelope(msgspec.Struct, frozen=True):
    """``{"ack": ...}`` for stop, cancel and delete."""

    ack: WorkerAck


class RespondAckEnvelope(msgspec.Struct, frozen=True):
    """``{"ack": ...}`` for respond."""

    ack: RespondAck


AckEnvelope = InputAckEnvelope | WorkerAckEnvelope


class RunEnvelope(msgspec.Struct, frozen=True):
    """``{"run": ...}``"""

    run: RunInfo


class TranscriptEnvelope(msgspec.Struct, frozen=True):
    """``{"transcript": ...}``"""

    transcript: TranscriptPage


class DiagnosticsEnvelope(msgspec.Struct, frozen=True):
    """``{"diagnostics": [...]}``"""

    diagnostics: list[Diagnostic]


class ErrorEnvelope(msgspec.Struct, frozen=True):
    """``{"error": {...}}``"""

    error: ErrorBody
