"""Domain structs as they appear on the wire: refs, runs, workers, transcript, events, diagnostics.

Field names are the contract shared by server and client. Timestamps are RFC 3339 strings in UTC; a value
that is unknown is ``null``, never absent.

A newer server may send more than this version knows, and a client decodes it all the same: an event kind or a
run status it does not know is kept as its string (`Event.kind` and `RunInfo.status` are ``str``; the values
this version knows are `KNOWN_EVENT_KINDS` and `KNOWN_RUN_STATUSES`, typed as `EventKind` and `RunStatus`), and
a field it does not know is ignored (no response struct forbids unknown fields).
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
    "Event",
    "EventKind",
    "EventKindStr",
    "Intent",
    "KNOWN_EVENT_KINDS",
    "KNOWN_RUN_STATUSES",
    "NamedProfile",
    "ProfileSelector",
    "ResourceRef",
    "RoleIntent",
    "RunError",
    "RunInfo",
    "RunStatus",
    "RunStatusStr",
    "RuntimeDefaultProfile",
    "RuntimeStatus",
    "RuntimeSummary",
    "StoreInfo",
    "TaskIntent",
    "TERMINAL_RUN_STATUSES",
    "Timestamp",
    "TokenUsage",
    "TranscriptEntry",
    "TranscriptRole",
    "UsageTotals",
    "WorkerCounts",
    "WorkerDetail",
    "WorkerRef",
    "WorkerStatus",
    "WorkerSummary",
    "CapabilitiesInfo",
]

WorkerStatus = Literal["idle", "busy", "stopped"]
#: The run statuses this version knows; `RunInfo.status` is a ``str``, since a newer server may send others.
RunStatus = Literal["running", "completed", "cancelled", "failed", "timed_out", "interrupted"]
KNOWN_RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"completed", "cancelled", "failed", "timed_out", "interrupted"})
TranscriptRole = Literal["user", "system", "assistant", "tool"]
RuntimeStatus = Literal["running", "stopping"]
DiagnosticLevel = Literal["info", "warning", "error"]
#: The event kinds this version knows; `Event.kind` is a ``str``, since a newer server may send others.
EventKind = Literal[
    "runtime_started",
    "worker_created",
    "input_accepted",
    "transcript_appended",
    "run_completed",
    "run_cancelled",
    "run_failed",
    "run_timed_out",
    "run_interrupted",
    "worker_stopped",
    "worker_deleted",
    "runtime_stopping",
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

    name: str
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


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run: created by one accepted input, then exactly one terminal status."""

    run_id: RunId
    status: RunStatusStr
    input_sequence: int | None
    started_at: Timestamp
    ended_at: Timestamp | None
    error: RunError | None
    usage: TokenUsage | None


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
    """A Worker in full: the summary fields plus what it was created with and its counters."""

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


# --- transcript, events, diagnostics -------------------------------------------------------------------------


class TranscriptEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a Worker's append-only transcript; `sequence` starts at 0."""

    sequence: int
    role: TranscriptRole
    content: str
    run_id: RunId | None
    created_at: Timestamp
    event_id: int


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the runtime-wide event log; ids increase strictly from 1 with no gaps."""

    id: int
    kind: EventKindStr
    worker_ref: WorkerRef | None
    run_id: RunId | None
    created_at: Timestamp
    data: dict[str, Any]


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
