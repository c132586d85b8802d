"""What one line of each log holds, and the runtime and checkpoint records. All msgspec JSON."""

from __future__ import annotations

from typing import Any

import msgspec

from worker_runtime_core.records import (
    EVENT_DATA_TYPES,
    EventRecord,
    InputKeyRecord,
    RunRecord,
    TranscriptRecord,
    WorkerRecord,
)

__all__ = [
    "CheckpointRecord",
    "EventLine",
    "RuntimeRecord",
    "WalLineIn",
    "WalLineOut",
    "decode_event",
    "decode_wal",
    "encode",
    "to_event",
]


class RuntimeRecord(msgspec.Struct, kw_only=True):
    """``runtime.json``: who this store belongs to."""

    format_version: int
    runtime_id: str
    display_name: str
    created_at: float


class CheckpointRecord(msgspec.Struct, kw_only=True):
    """``checkpoint.json``: projections (transcripts, runs, worker states) are on disk up to `event_id`."""

    event_id: int
    created_at: float


class WalLineOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event-log line as written: the event plus what changed with it (the worker pre-encoded)."""

    event: EventRecord
    worker: msgspec.Raw | None = None
    entry: TranscriptRecord | None = None
    ended_run: RunRecord | None = None
    input_key: InputKeyRecord | None = None
    delete_worker: bool = False
    queued_content: str | None = None  # a queued input's content, on its input_accepted only


class _EventIn(msgspec.Struct):
    id: int
    kind: str
    worker_id: str | None
    run_id: str | None
    created_at: float
    data: msgspec.Raw


class EventLine(msgspec.Struct):
    """Only the event of a line (the rest is skipped when decoding)."""

    event: _EventIn


class WalLineIn(msgspec.Struct, kw_only=True):
    """One event-log line as read back for replay."""

    event: _EventIn
    worker: WorkerRecord | None = None
    entry: TranscriptRecord | None = None
    ended_run: RunRecord | None = None
    input_key: InputKeyRecord | None = None
    delete_worker: bool = False
    queued_content: str | None = None


encode = msgspec.json.Encoder().encode
_EVENT_DECODER = msgspec.json.Decoder(EventLine)
_WAL_DECODER = msgspec.json.Decoder(WalLineIn)
_DATA_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(type_) for kind, type_ in EVENT_DATA_TYPES.items()
}


def to_event(raw: _EventIn) -> EventRecord:
    decoder = _DATA_DECODERS.get(raw.kind)
    data: Any = decoder.decode(raw.data) if decoder is not None else msgspec.json.decode(raw.data)
    return EventRecord(raw.id, raw.kind, raw.worker_id, raw.run_id, raw.created_at, data)


def decode_event(line: bytes) -> EventRecord:
    """The event of a log line. Raises msgspec errors for a damaged line."""
    return to_event(_EVENT_DECODER.decode(line).event)


def decode_wal(line: bytes) -> WalLineIn:
    return _WAL_DECODER.decode(line)
