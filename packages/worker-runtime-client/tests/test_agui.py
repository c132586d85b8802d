"""The AG-UI adapter: a run's items become AG-UI events that the ag-ui-protocol package's own types accept."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from ag_ui.core import Event as AguiEvent
from ag_ui.core import EventType
from client_helpers import BASE
from pydantic import TypeAdapter
from stream_helpers import (
    FakeStreamServer,
    Script,
    appended,
    delta,
    event,
    frame,
    run_ended,
    run_info,
    serve_run,
)
from stream_helpers import entry as entry_body

from worker_runtime_client import EntryDone, RetryPolicy, RunDone, RuntimeClient, TextDelta
from worker_runtime_client.agui import run_sse, to_agui
from worker_runtime_core import RunError, RunInfo, TokenUsage, TranscriptEntry

ADAPTER: TypeAdapter[Any] = TypeAdapter(AguiEvent)
T0 = "2026-11-24T12:00:00.000000Z"


def _entry(sequence: int, content: str, role: str = "assistant") -> TranscriptEntry:
    return TranscriptEntry(sequence=sequence, role=role, content=content, run_id="run-1", created_at=T0, event_id=9)  # type: ignore[arg-type]


def _run(status: str, error: RunError | None = None, usage: TokenUsage | None = None) -> RunInfo:
    return RunInfo(
        run_id="run-1", status=status, input_sequence=0, started_at=T0, ended_at=T0, error=error, usage=usage
    )


class _items:  # a plain async iterator: to_agui stops at RunDone, a generator would be left open
    def __init__(self, *items: Any) -> None:
        self._items = list(items)

    def __aiter__(self) -> _items:
        return self

    async def __anext__(self) -> Any:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)


async def _wire(items: _items) -> list[dict[str, Any]]:
    """Each AG-UI event as JSON, validated by the ag-ui-protocol package's own discriminated union."""
    out = []
    async for agui_event in to_agui(items, thread="rt-1/w1", run_id="run-1"):
        encoded = agui_event.model_dump_json(by_alias=True)
        ADAPTER.validate_json(encoded)
        out.append(json.loads(encoded))
    return out


async def test_a_completed_run_maps_to_started_messages_and_finished_with_the_id_scheme() -> None:
    items = _items(
        TextDelta(sequence=1, offset=0, text="Grü"),
        TextDelta(sequence=1, offset=3, text="ße 🌍"),
        EntryDone(entry=_entry(1, "Grüße 🌍")),
        EntryDone(entry=_entry(2, "", role="system")),
        RunDone(run=_run("completed", usage=TokenUsage(input_tokens=3, output_tokens=4))),
    )
    wire = await _wire(items)
    assert [e["type"] for e in wire] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    started, finished = wire[0], wire[-1]
    assert (started["threadId"], started["runId"]) == ("rt-1/w1", "run-1") and started["protocolVersion"]
    assert {e["messageId"] for e in wire[1:5]} == {"run-1:1"} and wire[5]["messageId"] == "run-1:2"
    assert wire[1]["role"] == "assistant" and wire[5]["role"] == "system"
    assert "".join(e["delta"] for e in wire if e["type"] == "TEXT_MESSAGE_CONTENT") == "Grüße 🌍"
    assert (finished["threadId"], finished["runId"]) == ("rt-1/w1", "run-1") and "outcome" not in finished
    assert finished["usage"] == [{"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}]


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        ("failed", RunError(code="command_failed", message="exit status 2: boom"), ("command_failed", "exit status 2")),
        ("timed_out", None, ("timed_out", "run timed_out")),
        ("interrupted", None, ("interrupted", "run interrupted")),
        ("expired_in_a_newer_server", None, ("expired_in_a_newer_server", "run expired")),
    ],
)
async def test_a_run_that_did_not_finish_is_a_run_error(status: str, error: RunError | None, expected: Any) -> None:
    wire = await _wire(_items(TextDelta(sequence=1, offset=0, text="par"), RunDone(run=_run(status, error))))
    assert [e["type"] for e in wire] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",  # a message still open is closed before the run's end
        "RUN_ERROR",
    ]
    code, message = expected
    assert wire[-1]["code"] == code and wire[-1]["message"].startswith(message)


async def test_a_cancelled_run_finishes_with_the_cancelled_outcome() -> None:
    wire = await _wire(_items(RunDone(run=_run("cancelled"))))
    assert [e["type"] for e in wire] == ["RUN_STARTED", "RUN_FINISHED"]
    assert wire[-1]["outcome"] == {"type": "cancelled"}


async def test_run_sse_follows_a_run_and_encodes_each_event_as_one_sse_frame() -> None:
    chunks = [frame(delta(1, 0, "hé")), frame(delta(1, 2, "llo")), frame(appended(5, 1, "héllo")), frame(run_ended(6))]
    server = FakeStreamServer(events=[event(i) for i in range(1, 7)], plan=lambda c, r: Script(chunks))
    serve_run(server, run=run_info(status="running"), entries=[entry_body(0, "q", role="user")], last_event_id=4)
    frames = []
    async with RuntimeClient(BASE, transport=server.transport(), retries=RetryPolicy(attempts=1)) as rt:
        with anyio.fail_after(10):  # a bound against a hang, not a wait
            async for text in run_sse(rt, "w1", "run-1"):
                frames.append(text)
    events = []
    for text in frames:
        assert text.startswith("data: ") and text.endswith("\n\n")
        events.append(ADAPTER.validate_json(text[len("data: ") : -2]))
    assert [e.type for e in events] == [
        EventType.RUN_STARTED,
        EventType.TEXT_MESSAGE_START,
        EventType.TEXT_MESSAGE_CONTENT,
        EventType.TEXT_MESSAGE_CONTENT,
        EventType.TEXT_MESSAGE_END,
        EventType.RUN_FINISHED,
    ]
    assert events[0].thread_id == "rt-1/w1"  # the runtime id from GET /v1/runtime
    assert "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT) == "héllo"
