"""Typed events: one struct per durable event kind, with typed `data`, as the event stream sends them.

`Event` (in `models`) is the generic shape ``GET /v1/events`` returns: `kind` a string and `data` a dict. Here each
kind this version knows has its own struct (a tagged union on `kind`), and each frame of
``GET /v1/events/stream`` also carries the transcript `entry` (on `input_accepted` and `transcript_appended`; null
on other kinds). A kind this version does not know decodes to `UnknownEvent`, which keeps its `kind` and `data`:
never a decode error. Unknown fields are ignored, and run statuses and error codes are strings, so a newer server's
values decode too. `OutputDelta` (in `models`) is the stream's only non-durable frame.

::

    event = decode_event(frame_json)          # bytes or str
    match event:
        case TranscriptAppendedEvent(entry=entry):
            print(entry.content if entry else event.data.sequence)
        case RunCompletedEvent() | RunFailedEvent():
            print(event.data.run.status)
        case UnknownEvent(kind=kind):
            print("newer kind", kind)

`typed_event(event)` turns a generic `Event` into the same typed struct.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

from .ids import RunId
from .models import (
    Event,
    InputAcceptedEventData,
    InputRequestedEventData,
    InputRespondedEventData,
    OutputDelta,
    RunEventData,
    RunStartedEventData,
    RuntimeStartedEventData,
    Timestamp,
    TranscriptAppendedEventData,
    TranscriptEntry,
    WorkerCreatedEventData,
    WorkerRef,
    WorkerStoppedEventData,
)

__all__ = [
    "TYPED_EVENT_BY_KIND",
    "InputAcceptedEvent",
    "RunStartedEvent",
    "InputRequestedEvent",
    "InputRespondedEvent",
    "RunCancelledEvent",
    "RunCompletedEvent",
    "RunEndedEvent",
    "RunFailedEvent",
    "RunInterruptedEvent",
    "RunTimedOutEvent",
    "RuntimeStartedEvent",
    "RuntimeStoppingEvent",
    "StreamItem",
    "TranscriptAppendedEvent",
    "TypedEvent",
    "UnknownEvent",
    "WorkerCreatedEvent",
    "WorkerDeletedEvent",
    "WorkerStoppedEvent",
    "decode_event",
    "decode_output_delta",
    "typed_event",
]


class _TypedEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """The fields every event has beside `id`, `kind` and `data`; `entry` is only on stream frames."""

    worker_ref: WorkerRef | None
    run_id: RunId | None
    created_at: Timestamp
    entry: TranscriptEntry | None = None

    @property
    def kind(self) -> str:
        """The event kind (the struct's tag)."""
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag


class _DurableEvent(_TypedEvent, frozen=True, kw_only=True):
    id: int


class RuntimeStartedEvent(_DurableEvent, frozen=True, kw_only=True, tag="runtime_started"):
    """The Runtime started (logged first at every start)."""

    data: RuntimeStartedEventData


class WorkerCreatedEvent(_DurableEvent, frozen=True, kw_only=True, tag="worker_created"):
    """A Worker was created."""

    data: WorkerCreatedEventData


class InputAcceptedEvent(_DurableEvent, frozen=True, kw_only=True, tag="input_accepted"):
    """An input was accepted; on the stream `entry` is the input's own transcript entry."""

    data: InputAcceptedEventData


class RunStartedEvent(_DurableEvent, frozen=True, kw_only=True, tag="run_started"):
    """A queued run started; on the stream `entry` is its input's transcript entry (appended with this event)."""

    data: RunStartedEventData


class TranscriptAppendedEvent(_DurableEvent, frozen=True, kw_only=True, tag="transcript_appended"):
    """A run appended an entry; on the stream `entry` is that entry, whole."""

    data: TranscriptAppendedEventData


class RunEndedEvent(_DurableEvent, frozen=True, kw_only=True):
    """A run ended; `data.run` is the run as it ended. The five ``run_<status>`` kinds are its subclasses."""

    data: RunEventData


class RunCompletedEvent(RunEndedEvent, frozen=True, kw_only=True, tag="run_completed"):
    """A run completed."""


class RunCancelledEvent(RunEndedEvent, frozen=True, kw_only=True, tag="run_cancelled"):
    """A run was cancelled (`data.reason` when the cancel gave one)."""


class RunFailedEvent(RunEndedEvent, frozen=True, kw_only=True, tag="run_failed"):
    """A run failed (`data.run.error` says why)."""


class RunTimedOutEvent(RunEndedEvent, frozen=True, kw_only=True, tag="run_timed_out"):
    """A run ran past its profile's timeout."""


class RunInterruptedEvent(RunEndedEvent, frozen=True, kw_only=True, tag="run_interrupted"):
    """A run was active when the Runtime stopped; logged at the next start."""


class WorkerStoppedEvent(_DurableEvent, frozen=True, kw_only=True, tag="worker_stopped"):
    """A Worker was stopped."""

    data: WorkerStoppedEventData


class WorkerDeletedEvent(_DurableEvent, frozen=True, kw_only=True, tag="worker_deleted"):
    """A stopped Worker was deleted (its events stay readable); `data` is ``{}``."""

    data: dict[str, Any]


class RuntimeStoppingEvent(_TypedEvent, frozen=True, kw_only=True, tag="runtime_stopping"):
    """The Runtime is shutting down; every stream sends it and ends. When the event could not be logged the frame
    has no ``id:`` line and `id` is 0 or null (event ids start at 1); `data` is ``{}``."""

    id: int | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class InputRequestedEvent(_DurableEvent, frozen=True, kw_only=True, tag="input_requested"):
    """A run asked for input (`data.request`) and is waiting for the answer."""

    data: InputRequestedEventData


class InputRespondedEvent(_DurableEvent, frozen=True, kw_only=True, tag="input_responded"):
    """A run's request for input closed: answered, timed out, or closed with its run (`data.outcome`)."""

    data: InputRespondedEventData


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event of a kind this version does not know (a newer server's): its `kind` and `data` kept as sent."""

    id: int | None
    kind: str
    worker_ref: WorkerRef | None = None
    run_id: RunId | None = None
    created_at: Timestamp | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    entry: TranscriptEntry | None = None


_KnownEvent: TypeAlias = (
    RuntimeStartedEvent
    | WorkerCreatedEvent
    | InputAcceptedEvent
    | RunStartedEvent
    | TranscriptAppendedEvent
    | RunCompletedEvent
    | RunCancelledEvent
    | RunFailedEvent
    | RunTimedOutEvent
    | RunInterruptedEvent
    | WorkerStoppedEvent
    | WorkerDeletedEvent
    | RuntimeStoppingEvent
    | InputRequestedEvent
    | InputRespondedEvent
)
#: Any event: the struct of its kind, or `UnknownEvent`.
TypedEvent: TypeAlias = _KnownEvent | UnknownEvent
#: What the event stream yields: a typed event or an output delta.
StreamItem: TypeAlias = TypedEvent | OutputDelta

#: The typed struct of each kind this version knows.
TYPED_EVENT_BY_KIND: Final[dict[str, type[_TypedEvent]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        RuntimeStartedEvent,
        WorkerCreatedEvent,
        InputAcceptedEvent,
        RunStartedEvent,
        TranscriptAppendedEvent,
        RunCompletedEvent,
        RunCancelledEvent,
        RunFailedEvent,
        RunTimedOutEvent,
        RunInterruptedEvent,
        WorkerStoppedEvent,
        WorkerDeletedEvent,
        RuntimeStoppingEvent,
        InputRequestedEvent,
        InputRespondedEvent,
    )
}

_KNOWN_DECODER: Final = msgspec.json.Decoder(_KnownEvent)
_UNKNOWN_DECODER: Final = msgspec.json.Decoder(UnknownEvent)
_DELTA_DECODER: Final = msgspec.json.Decoder(OutputDelta)


def decode_event(data: bytes | str) -> TypedEvent:
    """Decode one event's JSON (a stream frame's `data`, or an element of ``GET /v1/events``) to its typed struct.

    A kind this version does not know is an `UnknownEvent`; unknown fields are ignored.

    Raises:
        msgspec.DecodeError: not JSON.
        msgspec.ValidationError: not an event, or a known kind whose fields have the wrong shape.
    """
    try:
        return _KNOWN_DECODER.decode(data)
    except msgspec.ValidationError:
        generic = _UNKNOWN_DECODER.decode(data)
        if generic.kind in TYPED_EVENT_BY_KIND or generic.kind == "output_delta":
            raise  # a kind this version knows, in a shape it does not: not something to hide
        return generic


def decode_output_delta(data: bytes | str) -> OutputDelta:
    """Decode an ``output_delta`` frame's `data`.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not an output delta.
    """
    return _DELTA_DECODER.decode(data)


def typed_event(event: Event, entry: TranscriptEntry | None = None) -> TypedEvent:
    """The typed struct of a generic `Event` (an `UnknownEvent` for a kind this version does not know).

    Raises:
        msgspec.ValidationError: a known kind whose `data` has the wrong shape.
    """
    source = msgspec.to_builtins(event)
    source["entry"] = msgspec.to_builtins(entry)
    cls: type[Any] = TYPED_EVENT_BY_KIND.get(event.kind, UnknownEvent)
    return msgspec.convert(source, cls)  # type: ignore[no-any-return]
