"""follow_run against a scripted stream: text as it grows, once, agreeing with the entry; runs that ended before."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from client_helpers import BASE
from stream_helpers import (
    FakeStreamServer,
    Script,
    appended,
    delta,
    entry,
    event,
    frame,
    run_ended,
    run_info,
    serve_run,
)

from worker_runtime_client import (
    EntryDone,
    InvalidRequestError,
    InvalidWorkerIdError,
    RetryPolicy,
    RunDone,
    RuntimeClient,
    TextDelta,
)

TEXT = "Grüße 🌍, 日本語 ✓ — naïve café 🎉!"  # multi-byte in UTF-8, and two characters outside the BMP


async def _follow(rt: RuntimeClient) -> list[Any]:
    items = []
    with anyio.fail_after(10):  # a bound against a hang, not a wait
        async with rt.follow_run("w1", "run-1") as follow:
            async for item in follow:
                items.append(item)
    return items


def _texts(items: list[Any], sequence: int) -> str:
    pieces = [i for i in items if isinstance(i, TextDelta) and i.sequence == sequence]
    offsets = [p.offset for p in pieces]
    assert offsets == [sum(len(p.text) for p in pieces[:k]) for k in range(len(pieces))], "pieces not contiguous"
    return "".join(p.text for p in pieces)


def _client(server: FakeStreamServer) -> RuntimeClient:
    return RuntimeClient(BASE, transport=server.transport(), retries=RetryPolicy(attempts=1, backoff_s=0))


async def test_text_split_across_deltas_is_shown_once_and_agrees_with_the_entry() -> None:
    cuts = [0, 3, 4, 7, 9, 15, 16, 22, len(TEXT)]
    pieces = [delta(1, a, TEXT[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    chunks = [frame(pieces[0]), frame(pieces[1])]
    chunks.append(frame(delta(1, 0, TEXT[: cuts[3]])))  # a snapshot after a reconnect: from offset 0 again
    chunks += [frame(p) for p in pieces[2:5]]
    chunks.append(frame(pieces[3]))  # a replayed delta
    chunks.append(frame(delta(1, cuts[6] + 2, TEXT[cuts[6] + 2 : cuts[7]])))  # past a hole: the entry fills it
    chunks += [frame(appended(11, 1, TEXT)), frame(run_ended(12))]
    server = FakeStreamServer(events=[event(i) for i in range(1, 13)], plan=lambda c, r: Script(chunks))
    serve_run(server, run=run_info(status="running"), entries=[entry(0, "hi", role="user")], last_event_id=10)
    async with _client(server) as rt:
        items = await _follow(rt)
    assert _texts(items, 1) == TEXT
    done = [i for i in items if isinstance(i, EntryDone)]
    assert [d.entry.content for d in done] == [TEXT]
    assert isinstance(items[-1], RunDone) and items[-1].run.status == "completed"
    request = server.requests[0]
    assert dict(request.url.params) == {"after": "10", "worker_id": "w1", "run_id": "run-1", "deltas": "true"}


async def test_a_run_that_ended_before_it_was_followed_is_shown_whole_without_a_stream() -> None:
    entries = [entry(4, "question", role="user"), entry(5, "first 🌍"), entry(6, "second"), entry(7, "x", "run-2")]
    server = FakeStreamServer()
    serve_run(server, run=run_info(status="failed", input_sequence=4), entries=entries, last_event_id=30)
    async with _client(server) as rt:
        items = await _follow(rt)
    assert items == [
        TextDelta(sequence=5, offset=0, text="first 🌍"),
        EntryDone(entry=items[1].entry),
        TextDelta(sequence=6, offset=0, text="second"),
        EntryDone(entry=items[3].entry),
        RunDone(run=items[4].run),
    ]
    assert items[4].run.status == "failed"
    assert server.requests == []  # nothing left to stream
    pages = [dict(r.url.params) for r in server.reads if r.url.path.endswith("/transcript")]
    assert pages == [{"start": "4", "run_id": "run-1"}, {"start": "6", "run_id": "run-1"}]  # the run's entries only


async def test_entries_committed_before_it_subscribed_come_from_the_transcript_and_only_once() -> None:
    entries = [entry(0, "q", role="user"), entry(1, "already")]
    chunks = [
        frame(appended(9, 1, "already")),  # replayed from the cursor too: not shown twice
        frame(delta(2, 0, "gro")),
        frame(delta(2, 3, "wing")),
        frame(event(11, "transcript_appended", run_id="run-2", data={"sequence": 9, "role": "assistant"})),
        frame(appended(12, 2, "growing")),
        frame(run_ended(13, "cancelled")),
    ]
    server = FakeStreamServer(events=[event(i) for i in range(1, 14)], plan=lambda c, r: Script(chunks))
    serve_run(server, run=run_info(status="running"), entries=entries, last_event_id=8)
    async with _client(server) as rt:
        items = await _follow(rt)
    assert [type(i) for i in items] == [TextDelta, EntryDone, TextDelta, TextDelta, EntryDone, RunDone]
    assert _texts(items, 1) == "already" and _texts(items, 2) == "growing"
    assert isinstance(items[-1], RunDone) and items[-1].run.status == "cancelled"


async def test_follow_run_refuses_bad_ids_before_sending() -> None:
    server = FakeStreamServer()
    async with _client(server) as rt:
        with pytest.raises(InvalidWorkerIdError):
            rt.follow_run("bad id", "run-1")
        with pytest.raises(InvalidRequestError):
            rt.follow_run("w1", "a/b")
    assert server.requests == []
