"""Domain structs as they appear on the wire: refs, runs, workers, transcript, events, diagnostics.

Field names are the contract shared by server and client. Timestamps are RFC 3339 strings in UTC; a value
that is unknown is ``null``, never absent.

A newer server may send more than this version knows, and a client decodes it all the same: an event kind or a
run status it does not know is kept as its string (`Event.kind` and `RunInfo.status` are ``str``; the values
this version knows are `KNOWN_EVENT_KINDS` and `KNOWN_RUN_STATUSES`, typed as `EventKind` and `RunStatus`), and
a field it does not know is ignored (no response struct forbids unknown fields).

Three modules hold the shapes: `models` the domain structs a caller is shown (refs, runs, workers, transcript
entries, events, diagnostics), `wire` the request bodies, acks, pages and envelopes around them, and `records` the
compact internal records the Runtime keeps and hands to its store (never sent as they are).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec

from .config import LimitsInfo
from .ids import IdStr, RunId, RuntimeId, WorkerId

__all__ = [
    "AssistantIntent",
    "BuiltinProfile",
    "CapabilityRequest",
    "ConfigBundleRef",
    "Diagnostic",
    "DiagnosticLevel",
    "EVENT_DATA_BY_KIND",
    "Event",
    "EventKind",
    "EventKindStr",
    "InputAcceptedEventData",
    "InputRequestedEventData",
    "InputRespondedEventData",
    "Intent",
    "KNOWN_EVENT_KINDS",
    "KNOWN_RUN_STATUSES",
    "NamedProfile",
    "OutputDelta",
    "PendingRequest",
    "ProfileSelector",
    "RequestKind",
    "RequestOutcome",
    "ResourceRef",
    "RoleIntent",
    "RunError",
    "RunEventData",
    "RunInfo",
    "RunStatus",
    "RunStartedEventData",
    "RunStatusStr",
    "RuntimeDefaultProfile",
    "RuntimeStartedEventData",
    "RuntimeStatus",
    "RuntimeSummary",
    "StoreInfo",
    "StreamEvent",
    "TaskIntent",
    "TERMINAL_RUN_STATUSES",
    "Timestamp",
    "TokenUsage",
    "TranscriptAppendedEventData",
    "TranscriptEntry",
    "TranscriptRole",
    "UsageTotals",
    "WorkerCounts",
    "WorkerCreatedEventData",
    "WorkerDetail",
    "WorkerRef",
    "WorkerStatus",
    "WorkerStoppedEventData",
    "WorkerSummary",
    "CapabilitiesInfo",
]

WorkerStatus = Literal["idle", "busy", "stopped"]
#: The run statuses this version knows; `RunInfo.status` is a ``str``, since a newer server may send others.
RunStatus = Literal["queued", "running", "waiting", "completed", "cancelled", "failed", "timed_out", "interrupted"]
KNOWN_RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"completed", "cancelled", "failed", "timed_out", "interrupted"})
TranscriptRole = Literal["user", "system", "assistant", "tool"]
#: What a run's request for input asks for: an approval of an action, or the answer to a question.
RequestKind = Literal["approval", "question"]
#: How a request for input closed: answered, past its timeout, or closed with its run.
RequestOutcome = Literal["answered", "timed_out", "closed"]
RuntimeStatus = Literal["running", "stopping"]
DiagnosticLevel = Literal["info", "warning", "error"]
#: The event kinds this version knows; `Event.kind` is a ``str``, since a newer server may send others.
EventKind = Literal[
    "runtime_started",
    "worker_created",
    "input_accepted",
    "run_started",
    "transcript_appended",
    "run_completed",
    "run_cancelled",
    "run_failed",
    "run_timed_out",
    "run_interrupted",
    "worker_stopped",
    "worker_deleted",
    "runtime_stopping",
    "input_requested",
    "input_responded",
]
KNOWN_EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


def _open_enum(title: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of a string that is one of `known` today and may be another one tomorrow."""
    return {"anyOf": [{"type": "string", "enum": list(known), "title": title}, {"type": "string"}]}


#: An RFC 3339 timestamp in UTC, such as ``2026-11-24T12:00:00.000000Z``.
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
#: A run status: one of `KNOWN_RUN_STATUSES`, or one a newer server added (kept as sent).
RunStatusStr = Annotated[
    str,
    msgspec.Meta(
        description="One of the statuses listed, or one a newer server added: treat an unknown one as not terminal.",
        extra_json_schema=_open_enum("KnownRunStatus", KNOWN_RUN_STATUSES),
    ),
]
#: An event kind: one of `KNOWN_EVENT_KINDS`, or one a newer server added (kept as sent, with its data).
EventKindStr = Annotated[
    str,
    msgspec.Meta(
        description="One of the kinds listed, or one a newer server added (skip or log what you do not know).",
        extra_json_schema=_open_enum("KnownEventKind", KNOWN_EVENT_KINDS),
    ),
]


class WorkerRef(msgspec.Struct, frozen=True, kw_only=True):
    """The authority of a Worker: the pair of runtime id and worker id."""

    runtime_id: RuntimeId
    worker_id: WorkerId


# --- intents and profile selectors (tagged unions on `kind`) -------------------------------------------------


class AssistantIntent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="assistant"):
    """A general assistant, optionally with a purpose."""

    purpose: str | None = None


class TaskIntent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="task"):
    """A Worker created for one objective."""

    objective: str


class RoleIntent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="role"):
    """A Worker that plays a role, optionally with a purpose."""

    role: str
    purpose: str | None = None


Intent = AssistantIntent | TaskIntent | RoleIntent


class RuntimeDefaultProfile(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="runtime_default"):
    """Use the Runtime's default profile."""


class BuiltinProfile(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="builtin"):
    """Use the built-in profile of an engine that needs no options (resolves to ``builtin:<name>``)."""

    name: str


class NamedProfile(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="named"):
    """Use a profile named in the Runtime's configuration."""

    name: str


ProfileSelector = RuntimeDefaultProfile | BuiltinProfile | NamedProfile


class ConfigBundleRef(msgspec.Struct, frozen=True, kw_only=True):
    """A reference to a configuration bundle (placeholder for later sync)."""

    id: IdStr


class CapabilityRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A capability the Worker needs from its engine."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    reason: str | None = None


class ResourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """A named reference to a workspace or mount, opaque to the Runtime."""

    name: str
    reference: str


# --- runs ----------------------------------------------------------------------------------------------------


class RunError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a run failed."""

    code: str
    message: str


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens counted by an engine for one run."""

    input_tokens: int
    output_tokens: int


class PendingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A run's open request for input: an ``approval`` of an action or a ``question``, answered by
    ``POST /v1/workers/{worker_id}/runs/{run_id}/respond`` with its `request_id` before `expires_at`."""

    request_id: IdStr
    kind: RequestKind
    prompt: str
    data: Any = None
    created_at: Timestamp
    expires_at: Timestamp | None


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run: created by one accepted input, then exactly one terminal status. `pending_request` is set while
    the run is ``waiting`` for an answer, else null."""

    run_id: RunId
    status: RunStatusStr
    input_sequence: int | None
    started_at: Timestamp
    ended_at: Timestamp | None
    error: RunError | None
    usage: TokenUsage | None
    pending_request: PendingRequest | None = None


class UsageTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Runs and tokens added up over a Worker or the Runtime."""

    runs: int
    input_tokens: int
    output_tokens: int


# --- workers -------------------------------------------------------------------------------------------------


class WorkerSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A Worker as listed: identity, status and its active run."""

    worker_ref: WorkerRef
    display_name: str | None
    display_ref: str
    status: WorkerStatus
    profile: str
    created_at: Timestamp
    updated_at: Timestamp
    active_run: RunInfo | None


class WorkerDetail(WorkerSummary, frozen=True, kw_only=True):
    """A Worker in full: the summary fields plus what it was created with and its counters; `queued_runs` are the
    ids of its queued runs in the order they start."""

    intent: Intent
    profile_selector: ProfileSelector
    config_bundle: ConfigBundleRef | None
    requested_capabilities: list[CapabilityRequest]
    workspace_refs: list[ResourceRef]
    mount_refs: list[ResourceRef]
    last_run: RunInfo | None
    transcript_len: int
    last_event_id: int
    usage: UsageTotals
    queued_runs: list[RunId] = msgspec.field(default_factory=list)


# --- transcript, events, diagnostics -------------------------------------------------------------------------


class TranscriptEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a Worker's append-only transcript; `sequence` starts at 0. `data` is null (structured data of
    an entry, such as a tool call, is planned)."""

    sequence: int
    role: TranscriptRole
    content: str
    run_id: RunId | None
    created_at: Timestamp
    event_id: int
    data: dict[str, Any] | None = None


class OutputDelta(msgspec.Struct, frozen=True, kw_only=True):
    """Partial text of the entry a run is producing (stream only, never in the event log): `text` at code-point
    `offset` of the entry that will get transcript sequence `sequence`. The first delta a consumer gets of an entry
    is its whole text so far at offset 0; replaying one is harmless, since (sequence, offset) addresses it."""

    kind: Literal["output_delta"] = "output_delta"
    worker_ref: WorkerRef
    run_id: RunId
    sequence: int
    offset: int
    text: str


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the runtime-wide event log; ids increase strictly from 1 with no gaps."""

    id: int
    kind: EventKindStr
    worker_ref: WorkerRef | None
    run_id: RunId | None
    created_at: Timestamp
    data: dict[str, Any]


class StreamEvent(Event, frozen=True, kw_only=True):
    """A durable event as an event-stream frame carries it: the `Event` and, on `input_accepted`, `run_started` and
    `transcript_appended`, the transcript entry itself (null on a queued input's `input_accepted`: its entry comes
    with its `run_started`) (null on other kinds, and when the entry cannot be read any
    more: a deleted Worker's)."""

    entry: TranscriptEntry | None = None


# --- event data by kind (`Event.data` stays a dict: these describe it, and decode it with `msgspec.convert`) ------


class RuntimeStartedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `runtime_started`: the version of the Runtime that started."""

    version: str


class WorkerCreatedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `worker_created`: the name of the profile the Worker resolved to."""

    profile: str


class InputAcceptedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `input_accepted`: the transcript sequence of the input's own entry (this event is that entry's
    `event_id`), its `input_id` and its kind (`user` or `system`). An input queued behind the active run
    (``on_busy="enqueue"``) has `input_sequence` null and `queued` true: its entry comes with its `run_started`."""

    input_sequence: int | None
    input_id: str | None
    kind: str
    queued: bool = False


class RunStartedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `run_started`: a queued run started, and its input's transcript entry was appended at
    `input_sequence` (this event is that entry's `event_id`)."""

    input_sequence: int
    input_id: str | None
    kind: str


class TranscriptAppendedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `transcript_appended`: the sequence and role of the entry appended."""

    sequence: int
    role: str


class RunEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of the `run_<status>` events (`run_completed`, `run_cancelled`, `run_failed`, `run_timed_out`,
    `run_interrupted`): the run as it ended; `run_cancelled` also carries the cancel's `reason` when it gave one."""

    run: RunInfo
    reason: str | None = None


class WorkerStoppedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `worker_stopped`: the stop's reason and the run it cancelled (null when none was active)."""

    reason: str | None
    cancelled_run_id: RunId | None


class InputRequestedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `input_requested`: the request the run opened (its run is now ``waiting``)."""

    request: PendingRequest


class InputRespondedEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Data of `input_responded`: how the request `request_id` closed (`outcome` ``answered``, ``timed_out`` or
    ``closed`` with its run) and the answer: `approved` (an approval's; false for one that timed out), `content`."""

    request_id: IdStr
    outcome: str
    approved: bool | None
    content: str | None


#: The shape of `Event.data` for each kind this version logs with data; other kinds (`worker_deleted`,
#: `runtime_stopping`) have ``{}``, and a kind a newer server adds may have any object.
EVENT_DATA_BY_KIND: dict[str, type[msgspec.Struct]] = {
    "runtime_started": RuntimeStartedEventData,
    "worker_created": WorkerCreatedEventData,
    "input_accepted": InputAcceptedEventData,
    "run_started": RunStartedEventData,
    "transcript_appended": TranscriptAppendedEventData,
    "run_completed": RunEventData,
    "run_cancelled": RunEventData,
    "run_failed": RunEventData,
    "run_timed_out": RunEventData,
    "run_interrupted": RunEventData,
    "worker_stopped": WorkerStoppedEventData,
    "input_requested": InputRequestedEventData,
    "input_responded": InputRespondedEventData,
}


class Diagnostic(msgspec.Struct, frozen=True, kw_only=True):
    """Something an operator should know: a store repair, a corrupt record, a failed run."""

    level: DiagnosticLevel
    code: str
    message: str
    path: str | None
    offset: int | None
    worker_ref: WorkerRef | None
    created_at: Timestamp


# --- runtime summary -----------------------------------------------------------------------------------------


class StoreInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Which store the Runtime uses; `path` and `fsync` are null for the memory store."""

    kind: str
    path: str | None
    fsync: str | None


class WorkerCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Workers by status; stopped Workers count until deleted."""

    idle: int
    busy: int
    stopped: int
    total: int


class CapabilitiesInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Engines and profiles this Runtime offers."""

    engines: list[str]
    profiles: list[str]
    default_profile: str


class RuntimeSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a Runtime says about itself."""

    runtime_id: RuntimeId
    display_name: str
    version: str
    status: RuntimeStatus
    started_at: Timestamp
    store: StoreInfo
    workers: WorkerCounts
    limits: LimitsInfo
    capabilities: CapabilitiesInfo
    usage: UsageTotals
