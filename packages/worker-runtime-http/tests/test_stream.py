"""``GET /v1/events/stream`` through ASGI: frames, resume, filters, entries inline, cursor errors, heartbeats,
shutdown, `max_streams`, a stalled consumer beside a fast one, and many abrupt disconnects.

`AsgiStream` drives the app with raw ASGI messages: `send` hands each message over a channel without a buffer,
so a test that does not read is a stalled consumer (the app's `send` waits, as on a full socket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import pytest
from core_helpers import Gate
from http_helpers import TOKEN, make_runtime

from worker_runtime_core import Engine, Limits, ProfileConfig, RunContext, Runtime, StreamPage
from worker_runtime_http import create_app

Frame = dict[str, Any]


class AsgiStream:
    """One request to the app; `frames` parses what it sends as Server-Sent Events."""

    def __init__(self, app: Any, query: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        self.app = app
        qs = urlencode(query or {}).encode()
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/events/stream",
            "raw_path": b"/v1/events/stream",
            "query_string": qs,
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8787"),
                (b"authorization", f"Bearer {TOKEN}".encode()),
                *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8787),
        }
        self.gone = anyio.Event()
        self.sender, self.messages = anyio.create_memory_object_stream[dict[str, Any]](0)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.ended = False
        self._buffer = b""
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.sender.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the test stopped reading: like a socket closed under the server

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        finally:
            self.sender.close()

    async def start(self) -> int:
        message = await self.messages.receive()
        assert message["type"] == "http.response.start"
        self.status = message["status"]
        self.headers = dict(message["headers"])
        return self.status

    async def body(self) -> bytes:
        out = b""
        async for message in self.messages:
            out += message.get("body", b"")
        return out

    async def next_frame(self) -> Frame | None:
        """The next frame (``{"id", "event", "data", "comment"}``), or None once the stream has ended."""
        while b"\n\n" not in self._buffer:
            if self.ended:
                return None
            try:
                message = await self.messages.receive()
            except anyio.EndOfStream:
                self.ended = True
                continue
            self._buffer += message.get("body", b"")
            if not message.get("more_body", False):
                self.ended = True
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        return parse_frame(raw.decode())

    async def frames(self, count: int) -> list[Frame]:
        out = []
        with anyio.fail_after(10):
            while len(out) < count:
                frame = await self.next_frame()
                assert frame is not None, f"the stream ended after {out}"
                if "comment" not in frame:
                    out.append(frame)
        return out

    async def rest(self) -> list[Frame]:
        """Every frame until the stream ends."""
        out = []
        with anyio.fail_after(10):
            while (frame := await self.next_frame()) is not None:
                out.append(frame)
        return out

    def disconnect(self) -> None:
        self.gone.set()
        self.messages.close()


def parse_frame(text: str) -> Frame:
    frame: Frame = {}
    for line in text.split("\n"):
        if line.startswith(":"):
            frame["comment"] = line[1:].strip()
            continue
        name, _, value = line.partition(": ")
        frame[name] = json.loads(value) if name == "data" else value
    return frame


class Served:
    def __init__(self, rt: Runtime, app: Any, tg: anyio.abc.TaskGroup) -> None:
        self.rt, self.app, self.tg = rt, app, tg
        self.streams: list[AsgiStream] = []

    def start(self, stream: AsgiStream) -> None:
        self.streams.append(stream)
        self.tg.start_soon(stream.run)

    async def open(self, query: dict[str, Any] | None = None, **headers: str) -> AsgiStream:
        stream = AsgiStream(self.app, query, {k.replace("_", "-"): v for k, v in headers.items()})
        self.start(stream)
        await stream.start()
        return stream


@asynccontextmanager
async def served(gate: Gate, runtime: Runtime | None = None, **limits: Any) -> AsyncIterator[Served]:
    async with runtime if runtime is not None else make_runtime(gate, limits=Limits(**limits)) as rt:
        app = create_app(rt, token=TOKEN, bind=("127.0.0.1", 8787))
        async with anyio.create_task_group() as tg:
            s = Served(rt, app, tg)
            try:
                yield s
            finally:
                tg.cancel_scope.cancel()
                for stream in s.streams:
                    stream.messages.close()


async def _run(rt: Runtime, wid: str, text: str) -> str:
    ack = await rt.send_input(wid, text)
    await rt.wait_for_run(wid, ack.run_id)
    return ack.run_id


async def _settled(s: Served, open_streams: int) -> None:
    """Wait until the streams that ended have run their last lines (and given their slots back)."""
    with anyio.fail_after(10):
        while s.app._ctx.streams.open != open_streams:
            await anyio.wait_all_tasks_blocked()


async def _error(s: Served, query: dict[str, Any] | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
    stream = await s.open(query, **headers)
    body = json.loads(await stream.body())
    return stream.status, body["error"]


# --- frames --------------------------------------------------------------------------------------------------


async def test_replay_sends_one_frame_per_event_with_entries_inline(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="w")
        run_id = await _run(s.rt, "w", "héllo 🌍")
        events = (await s.rt.read_events()).events
        stream = await s.open({"after": 0})
        assert stream.status == 200 and stream.headers[b"content-type"].startswith(b"text/event-stream")
        assert b"x-request-id" in stream.headers
        frames = await stream.frames(len(events))
        stream.disconnect()
    assert [int(f["id"]) for f in frames] == [e.id for e in events]
    assert [f["event"] for f in frames] == [e.kind for e in events]
    by_kind = {f["event"]: f["data"] for f in frames}
    assert by_kind["input_accepted"]["entry"]["content"] == "héllo 🌍"
    assert by_kind["transcript_appended"]["entry"]["run_id"] == run_id
    assert by_kind["run_completed"]["entry"] is None
    for frame, event in zip(frames, events, strict=True):
        assert {k: v for k, v in frame["data"].items() if k != "entry"} == json.loads(_encode(event))


def _encode(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


async def test_last_event_id_wins_over_after(gate: Gate) -> None:
    async with served(gate) as s:
        for n in range(3):
            await s.rt.create_worker(worker_id=f"w{n}")
        stream = await s.open({"after": 0}, last_event_id="3")
        frames = await stream.frames(1)
        stream.disconnect()
    assert frames[0]["id"] == "4"


async def test_without_a_cursor_the_stream_is_live_only(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="old")
        stream = await s.open()
        await s.rt.create_worker(worker_id="new")
        (frame,) = await stream.frames(1)
        stream.disconnect()
    assert frame["event"] == "worker_created" and frame["data"]["worker_ref"]["worker_id"] == "new"


async def test_every_stream_names_the_newest_id_when_it_opened_as_x_event_cursor(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="a")
        await s.rt.create_worker(worker_id="b")
        opened_at = s.rt.newest_event_id
        live = await s.open()
        filtered = await s.open({"worker_id": "b", "deltas": "true"})
        replay = await s.open({"after": 0})
        await s.rt.create_worker(worker_id="c")  # logged after they opened: not their X-Event-Cursor
        for stream in (live, filtered, replay):
            assert stream.headers[b"x-event-cursor"] == b"%d" % opened_at
        live.disconnect()  # dropped before its first frame: resuming from the header misses nothing
        filtered.disconnect()
        replay.disconnect()
        again = await s.open(last_event_id=str(opened_at))
        (frame,) = await again.frames(1)
        again.disconnect()
    assert frame["data"]["worker_ref"]["worker_id"] == "c"


async def test_live_streams_at_one_cursor_share_one_read_per_write(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="a")
        streams = [await s.open() for _ in range(3)]
        filtered = await s.open({"worker_id": "b"})  # another filter: a page of its own
        reads: list[tuple[int, str | None]] = []
        read = s.rt.read_stream

        async def counted(after: int = 0, limit: int | None = None, **filters: Any) -> StreamPage:
            reads.append((after, filters.get("worker_id")))
            return await read(after, limit, **filters)

        s.rt.read_stream = counted  # type: ignore[method-assign]
        await s.rt.create_worker(worker_id="b")
        got = [await stream.frames(1) for stream in [*streams, filtered]]
        for stream in [*streams, filtered]:
            stream.disconnect()
    assert {frames[0]["data"]["worker_ref"]["worker_id"] for frames in got} == {"b"}
    assert len(reads) == 2 and set(reads) == {(2, None), (2, "b")}  # one per cursor and filter, not per stream


async def test_empty_parameters_count_as_absent(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="old")
        stream = await s.open({"after": "", "worker_id": "", "run_id": "", "deltas": ""}, last_event_id="")
        await s.rt.create_worker(worker_id="new")
        (frame,) = await stream.frames(1)
        stream.disconnect()
    assert stream.status == 200 and frame["data"]["worker_ref"]["worker_id"] == "new"


async def test_a_dropped_stream_resumes_at_every_position_without_gap_or_repeat(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="w")
        for n in range(4):
            await _run(s.rt, "w", f"input {n}")
        newest = s.rt.newest_event_id
        for position in range(newest + 1):  # read `position` frames, drop the connection, resume from the last id
            stream = await s.open({"after": 0})
            first = await stream.frames(position)
            stream.disconnect()
            cursor = first[-1]["id"] if first else "0"
            again = await s.open(last_event_id=cursor)
            rest = await again.frames(newest - position)
            again.disconnect()
            ids = [int(f["id"]) for f in first + rest]
            assert ids == list(range(1, newest + 1)), position


async def test_worker_and_run_filters(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="a")
        await s.rt.create_worker(worker_id="b")
        first = await _run(s.rt, "a", "one")
        await _run(s.rt, "b", "other")
        await _run(s.rt, "a", "two")
        by_worker = await s.open({"after": 0, "worker_id": "b"})
        frames = await by_worker.frames(4)
        by_run = await s.open({"after": 0, "worker_id": "a", "run_id": first})
        run_frames = await by_run.frames(3)
        await _run(s.rt, "b", "live")  # a live event of b reaches b's stream, not the run's
        (live,) = await by_worker.frames(1)
        by_worker.disconnect()
        by_run.disconnect()
    assert {f["data"]["worker_ref"]["worker_id"] for f in frames} == {"b"}
    assert [f["event"] for f in run_frames] == ["input_accepted", "transcript_appended", "run_completed"]
    assert {f["data"]["run_id"] for f in run_frames} == {first}
    assert live["event"] == "input_accepted" and live["data"]["entry"]["content"] == "live"


async def test_a_deleted_workers_events_stream_with_null_entries(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="w")
        await _run(s.rt, "w", "bye")
        await s.rt.stop_worker("w")
        await s.rt.delete_worker("w")
        stream = await s.open({"after": 0, "worker_id": "w"})
        frames = await stream.frames(6)
        stream.disconnect()
    assert [f["event"] for f in frames][-2:] == ["worker_stopped", "worker_deleted"]
    assert all(f["data"]["entry"] is None for f in frames)


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ({"run_id": "run-1"}, {}, "run_id"),
        ({"worker_id": "w", "run_id": "bad id"}, {}, "run_id"),
        ({"worker_id": "bad id"}, {}, "worker_id"),
        ({"after": "x"}, {}, "after"),
        ({"after": -1}, {}, "after"),
        ({"deltas": "yes"}, {}, "deltas"),
        ({"wait": 1}, {}, "wait"),
        ({}, {"last_event_id": "abc"}, "Last-Event-ID"),
        ({}, {"last_event_id": "-1"}, "Last-Event-ID"),
        ({}, {"last_event_id": "1.5"}, "Last-Event-ID"),
        ({}, {"last_event_id": "99999999999999999999"}, "Last-Event-ID"),
    ],
)
async def test_malformed_input_is_422_before_any_frame(
    gate: Gate, query: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    async with served(gate) as s:
        status, error = await _error(s, query, **headers)
        assert s.app._ctx.streams.open == 0
    assert status == 422 and error["code"] == "invalid_request" and error["details"]["field"] == field


async def test_a_cursor_above_the_newest_id_is_422_naming_it(gate: Gate) -> None:
    async with served(gate) as s:
        newest = s.rt.newest_event_id
        for query, headers in [({"after": newest + 1}, {}), ({}, {"last_event_id": str(newest + 5)})]:
            status, error = await _error(s, query, **headers)
            assert status == 422 and error["details"] == {"field": "after", "newest_id": newest}


async def test_an_expired_cursor_is_410_before_any_frame(gate: Gate) -> None:
    async with served(gate, event_retention=2) as s:
        for n in range(5):
            await s.rt.create_worker(worker_id=f"w{n}")
        status, error = await _error(s, {"after": 0})
    assert status == 410 and error["code"] == "cursor_expired"


async def test_the_stream_needs_the_token(gate: Gate) -> None:
    async with served(gate) as s:
        stream = AsgiStream(s.app)
        stream.scope["headers"] = [(b"host", b"127.0.0.1:8787")]
        s.start(stream)
        assert await stream.start() == 401


# --- heartbeats, shutdown, max_streams ------------------------------------------------------------------------


async def test_silence_gets_a_keep_alive_comment(gate: Gate) -> None:
    async with served(gate, stream_heartbeat_s=0.01) as s:
        stream = await s.open()
        with anyio.fail_after(10):
            frame = await stream.next_frame()
        await s.rt.create_worker(worker_id="w")  # frames still come after it
        (created,) = await stream.frames(1)
        stream.disconnect()
    assert frame == {"comment": "keep-alive"}
    assert created["event"] == "worker_created"


async def test_shutdown_sends_runtime_stopping_on_every_stream_then_ends(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="w")
        plain = await s.open()
        filtered = await s.open({"worker_id": "w"})
        by_run = await s.open({"worker_id": "w", "run_id": "run-9"})
        await s.rt.close()
        stopping = s.rt.stopping_frame
        assert stopping is not None
        ends = [await stream.rest() for stream in (plain, filtered, by_run)]
        await _settled(s, 0)
    for frames in ends:
        assert [(f["id"], f["event"]) for f in frames] == [(str(stopping.id), "runtime_stopping")]


async def test_a_new_stream_while_stopping_is_503(gate: Gate) -> None:
    async with served(gate) as s:
        stream = await s.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.rt.close)
            await stream.rest()
            status, error = await _error(s)
    assert status == 503 and error["code"] == "runtime_unavailable"


async def test_one_stream_past_max_streams_is_503_and_a_closed_one_frees_its_slot(gate: Gate) -> None:
    async with served(gate, max_streams=2) as s:
        first = await s.open()
        second = await s.open()
        status, error = await _error(s)
        assert status == 503 and error["code"] == "runtime_unavailable" and error["retryable"]
        assert error["details"] == {"max_streams": 2}
        first.disconnect()
        await _settled(s, 1)
        third = await s.open()
        assert third.status == 200
        second.disconnect()
        third.disconnect()


# --- slow consumers and disconnects ---------------------------------------------------------------------------


async def test_a_stalled_consumer_does_not_hold_back_a_fast_one(gate: Gate) -> None:
    async with served(gate) as s:
        await s.rt.create_worker(worker_id="w")
        stalled = await s.open({"after": 0})  # never read until the end: its sends wait
        fast = await s.open({"after": 0})
        received: list[int] = []
        for n in range(150):
            await _run(s.rt, "w", f"n{n}")
            received += [int(f["id"]) for f in await fast.frames(s.rt.newest_event_id - len(received))]
        newest = s.rt.newest_event_id
        assert received == list(range(1, newest + 1))
        late = await stalled.frames(newest)  # it gets every frame too, at its own pace
        assert [int(f["id"]) for f in late] == received
        stalled.disconnect()
        fast.disconnect()


async def test_a_thousand_abrupt_disconnects_leave_no_stream_behind(gate: Gate) -> None:
    async with served(gate, max_streams=5) as s:
        await s.rt.create_worker(worker_id="w")
        await _run(s.rt, "w", "x" * 2000)
        for n in range(1000):
            stream = AsgiStream(s.app, {"after": n % 5})  # at least one frame to come
            # The app's own tasks must end for the task group to exit.
            with anyio.fail_after(10), stream.messages:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.run)
                    await stream.start()
                    if n % 2:
                        await stream.messages.receive()  # part of the replay, then gone with frames unread
                    stream.disconnect()
        assert s.app._ctx.streams.open == 0
        last = [await s.open() for _ in range(5)]  # every slot is free again
        assert all(stream.status == 200 for stream in last)
        for stream in last:
            stream.disconnect()


# --- output deltas -------------------------------------------------------------------------------------------


class Pieces:
    """A `writer` engine: its run writes one entry, piece by piece as the test puts them, until None."""

    def __init__(self) -> None:
        self.put, self._get = anyio.create_memory_object_stream[str | None](100)

    def runtime(self, **limits: Any) -> Runtime:
        pieces = self

        class Writer(Engine):
            name = "writer"

            async def run(self, ctx: RunContext) -> None:
                async with ctx.begin_entry() as entry:
                    async for piece in pieces._get:
                        if piece is None:
                            break
                        entry.write(piece)

        return Runtime(
            runtime_id="rt-test",
            profiles={"default": ProfileConfig("writer")},
            engines={"writer": Writer},
            limits=Limits(**limits),
        )

    def close(self) -> None:
        self.put.close()
        self._get.close()


@pytest.fixture
def pieces() -> Iterator[Pieces]:
    p = Pieces()
    yield p
    p.close()


async def _text_upto(stream: AsgiStream, text: dict[int, str], length: int) -> list[Frame]:
    """Read frames, applying deltas to `text` (by sequence), until some entry is `length` long; returns them."""
    seen = []
    with anyio.fail_after(10):
        while max((len(t) for t in text.values()), default=0) < length:
            (frame,) = await stream.frames(1)
            seen.append(frame)
            if frame["event"] == "output_delta":
                delta = frame["data"]
                assert "id" not in frame and delta["kind"] == "output_delta"
                current = text.get(delta["sequence"], "")
                assert delta["offset"] <= len(current)  # never a gap; a repeat is harmless
                text[delta["sequence"]] = current[: delta["offset"]] + delta["text"]
    return seen


async def test_deltas_then_the_final_entry_agree_character_for_character(gate: Gate, pieces: Pieces) -> None:
    async with served(gate, pieces.runtime()) as s:
        await s.rt.create_worker(worker_id="w")
        stream = await s.open({"deltas": "true", "worker_id": "w"})
        ack = await s.rt.send_input("w", "go")
        text: dict[int, str] = {}
        for piece in ["hé", "llo ", "🌍", "!"]:
            goal = len("".join(text.values())) + len(piece)
            await pieces.put.send(piece)
            await _text_upto(stream, text, goal)
        await pieces.put.send(None)
        frames = []
        while not frames or frames[-1]["event"] != "run_completed":
            frames += await stream.frames(1)
        stream.disconnect()
    appended = next(f for f in frames if f["event"] == "transcript_appended")
    assert appended["data"]["entry"]["content"] == "héllo 🌍!" == text[appended["data"]["entry"]["sequence"]]
    assert appended["data"]["run_id"] == ack.run_id


async def test_a_stream_opened_mid_entry_gets_a_snapshot_first_and_again_on_reconnect(
    gate: Gate, pieces: Pieces
) -> None:
    async with served(gate, pieces.runtime()) as s:
        await s.rt.create_worker(worker_id="w")
        watcher = await s.open({"deltas": "true"})
        await s.rt.send_input("w", "go")
        await pieces.put.send("abc")
        await _text_upto(watcher, {}, 3)  # the entry has "abc" now
        stream = await s.open({"deltas": "true"})
        (snapshot,) = await stream.frames(1)
        await pieces.put.send("dé")
        (live,) = await stream.frames(1)
        cursor = str(s.rt.newest_event_id)
        stream.disconnect()
        again = await s.open({"deltas": "true"}, last_event_id=cursor)
        (resnapshot,) = await again.frames(1)
        await pieces.put.send(None)
        (appended,) = await again.frames(1)
        again.disconnect()
        watcher.disconnect()
    assert (snapshot["event"], snapshot["data"]["offset"], snapshot["data"]["text"]) == ("output_delta", 0, "abc")
    assert (live["data"]["offset"], live["data"]["text"]) == (3, "dé")
    assert (resnapshot["data"]["offset"], resnapshot["data"]["text"]) == (0, "abcdé")
    assert appended["event"] == "transcript_appended" and appended["data"]["entry"]["content"] == "abcdé"


async def test_without_deltas_true_no_delta_frame_is_sent(gate: Gate, pieces: Pieces) -> None:
    async with served(gate, pieces.runtime()) as s:
        await s.rt.create_worker(worker_id="w")
        stream = await s.open()
        await s.rt.send_input("w", "go")
        await pieces.put.send("text")
        await pieces.put.send(None)
        frames = await stream.frames(3)
        stream.disconnect()
    assert [f["event"] for f in frames] == ["input_accepted", "transcript_appended", "run_completed"]


async def test_an_entry_committed_during_the_replay_gets_no_delta(gate: Gate, pieces: Pieces) -> None:
    async with served(gate, pieces.runtime()) as s:
        await s.rt.create_worker(worker_id="w")
        ack = await s.rt.send_input("w", "go")
        await pieces.put.send("done before")
        await pieces.put.send(None)
        await s.rt.wait_for_run("w", ack.run_id)
        stream = await s.open({"after": 0, "deltas": "true"})
        frames = await stream.frames(s.rt.newest_event_id)
        await s.rt.create_worker(worker_id="next")  # a durable frame after the replay, with no delta before it
        (after,) = await stream.frames(1)
        stream.disconnect()
    assert all(f["event"] != "output_delta" for f in frames)
    assert after["event"] == "worker_created"


async def test_a_silent_delta_stream_gets_keep_alives_and_then_its_deltas(gate: Gate, pieces: Pieces) -> None:
    async with served(gate, pieces.runtime(stream_heartbeat_s=0.01)) as s:
        await s.rt.create_worker(worker_id="w")
        stream = await s.open({"deltas": "true", "worker_id": "w"})
        await s.rt.send_input("w", "go")
        with anyio.fail_after(10):
            frames = [await stream.next_frame()]
            while frames[-1] != {"comment": "keep-alive"}:  # the durable frames of the input first, then silence
                frames.append(await stream.next_frame())
            assert await stream.next_frame() == {"comment": "keep-alive"}  # silence again: another
            await pieces.put.send("hi")
            text: dict[int, str] = {}
            await _text_upto(stream, text, 2)
        stream.disconnect()
    assert list(text.values()) == ["hi"]


class _CommittedBeforeReadable:
    """A Runtime whose store reports an event committed before a read can see it (the FS store's committed id
    moves in its writer thread; the journal confirms, and wakes readers, after)."""

    def __init__(self) -> None:
        self.visible = False
        self.signal = anyio.Event()
        self.newest_event_id = 4
        self.reads = 0

    def event_signal(self) -> anyio.Event:
        return self.signal

    async def read_stream(self, cursor: int, limit: int, *, worker_id: Any, run_id: Any) -> StreamPage:
        self.reads += 1
        if not self.visible:
            return StreamPage(events=[], next_after=cursor, has_more=False)
        return StreamPage(events=[], next_after=cursor + 1, has_more=False)

    def confirm(self) -> None:
        self.visible = True
        self.signal.set()
        self.signal = anyio.Event()


async def test_a_shared_page_read_before_a_write_was_confirmed_is_not_served_after_it() -> None:
    from worker_runtime_http.stream import Streams

    streams = Streams()
    rt = _CommittedBeforeReadable()
    first = await streams.read(rt, 3, None, None)  # type: ignore[arg-type]
    assert first.next_after == 3
    assert (await streams.read(rt, 3, None, None)).next_after == 3  # type: ignore[arg-type]
    assert rt.reads == 1  # shared until the next confirmed write
    rt.confirm()  # the committed id did not move, but the write is confirmed now: the page is stale
    assert (await streams.read(rt, 3, None, None)).next_after == 4  # type: ignore[arg-type]
