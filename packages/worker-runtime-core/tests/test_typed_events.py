"""Typed events: every kind the Runtime logs decodes to its own struct; a newer server's kinds and values decode."""

from __future__ import annotations

import msgspec
import pytest

from worker_runtime_core import (
    KNOWN_EVENT_KINDS,
    TYPED_EVENT_BY_KIND,
    InputAcceptedEvent,
    OutputDelta,
    RunCancelledEvent,
    RunCompletedEvent,
    RunEndedEvent,
    Runtime,
    RuntimeStartedEvent,
    RuntimeStoppingEvent,
    TranscriptAppendedEvent,
    TranscriptEntry,
    UnknownEvent,
    WorkerCreatedEvent,
    WorkerDeletedEvent,
    WorkerStoppedEvent,
    decode_event,
    decode_output_delta,
    typed_event,
)

T0 = "2026-11-24T12:00:00.000000Z"
REF = {"runtime_id": "rt", "worker_id": "w"}


def _json(kind: str, data: object, **fields: object) -> bytes:
    body = {"id": 7, "kind": kind, "worker_ref": REF, "run_id": "run-1", "created_at": T0, "data": data}
    body.update(fields)
    return msgspec.json.encode(body)


def test_every_known_kind_has_its_struct() -> None:
    assert set(TYPED_EVENT_BY_KIND) == set(KNOWN_EVENT_KINDS)


async def test_every_event_a_runtime_logs_decodes_to_its_own_struct() -> None:
    async with Runtime(runtime_id="rt") as rt:
        await rt.create_worker(worker_id="w")
        ack = await rt.send_input("w", "hi")
        await rt.wait_for_run("w", ack.run_id)
        await rt.stop_worker("w")
        await rt.delete_worker("w")
        events = (await rt.read_events()).events
    typed = [typed_event(e) for e in events]
    assert [type(t) for t in typed] == [
        RuntimeStartedEvent,
        WorkerCreatedEvent,
        InputAcceptedEvent,
        TranscriptAppendedEvent,
        RunCompletedEvent,
        WorkerStoppedEvent,
        WorkerDeletedEvent,
    ]
    assert [t.id for t in typed] == [e.id for e in events]
    assert all(t.kind == e.kind for t, e in zip(typed, events, strict=True))
    completed = typed[4]
    assert isinstance(completed, RunEndedEvent) and completed.data.run.run_id == ack.run_id
    # and the same events as JSON (what the stream sends) decode alike
    assert [decode_event(msgspec.json.encode(e)) for e in events] == typed


def test_a_frame_carries_its_entry() -> None:
    entry = {"sequence": 1, "role": "assistant", "content": "héllo", "run_id": "run-1", "created_at": T0, "event_id": 7}
    event = decode_event(_json("transcript_appended", {"sequence": 1, "role": "assistant"}, entry=entry))
    assert isinstance(event, TranscriptAppendedEvent)
    assert event.entry == msgspec.convert(entry, TranscriptEntry)
    assert event.data.sequence == 1


def test_a_newer_servers_kinds_statuses_codes_and_fields_decode() -> None:
    unknown = decode_event(_json("run_paused", {"until": 3}, brand_new=True))
    assert isinstance(unknown, UnknownEvent)
    assert (unknown.kind, unknown.data, unknown.id, unknown.run_id) == ("run_paused", {"until": 3}, 7, "run-1")
    run = {
        "run_id": "run-1",
        "status": "expired",
        "input_sequence": None,
        "started_at": T0,
        "ended_at": T0,
        "error": {"code": "quota_gone", "message": "m"},
        "usage": None,
        "pending_request": None,
    }
    cancelled = decode_event(_json("run_cancelled", {"run": run, "reason": "user", "extra": 1}))
    assert isinstance(cancelled, RunCancelledEvent)
    assert cancelled.data.run.status == "expired" and cancelled.data.run.error is not None
    assert cancelled.data.run.error.code == "quota_gone" and cancelled.data.reason == "user"


@pytest.mark.parametrize("unlogged_id", [None, 0])
def test_a_runtime_stopping_that_was_not_logged_decodes(unlogged_id: int | None) -> None:
    event = decode_event(_json("runtime_stopping", {}, id=unlogged_id, worker_ref=None, run_id=None))
    assert isinstance(event, RuntimeStoppingEvent) and event.id == unlogged_id


@pytest.mark.parametrize(
    "payload",
    [
        _json("run_failed", {"not_run": 1}),
        _json("worker_created", {}),
        _json("output_delta", {}),
        b'{"kind": "worker_created"}',
    ],
)
def test_a_known_kind_in_a_wrong_shape_is_a_validation_error(payload: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(payload)


def test_output_delta_decodes_and_keeps_code_point_offsets() -> None:
    body = {"kind": "output_delta", "worker_ref": REF, "run_id": "run-1", "sequence": 2, "offset": 3, "text": "🌍x"}
    delta = decode_output_delta(msgspec.json.encode(body))
    assert delta == OutputDelta(worker_ref=delta.worker_ref, run_id="run-1", sequence=2, offset=3, text="🌍x")
    assert len(delta.text) == 2
    assert msgspec.json.decode(msgspec.json.encode(delta))["kind"] == "output_delta"
