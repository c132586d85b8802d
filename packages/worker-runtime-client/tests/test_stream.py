"""EventStream against a scripted stream (stream_helpers): reconnects, cursor, backoff, typed errors, typed frames."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from client_helpers import BASE
from stream_helpers import (
    FakeStreamServer,
    Script,
    Sleeps,
    appended,
    delta,
    event,
    frame,
    run_ended,
)

from worker_runtime_client import (
    CursorAheadError,
    CursorExpiredError,
    EventStream,
    InvalidRequestError,
    OutputDelta,
    ProtocolError,
    RetryPolicy,
    RunCompletedEvent,
    RuntimeChangedError,
    RuntimeClient,
    RuntimeStoppingEvent,
    RuntimeUnavailableError,
    TranscriptAppendedEvent,
    UnauthorizedError,
    UnknownEvent,
    WorkerCreatedEvent,
)
from worker_runtime_client._stream import _event_cursor

FAST = RetryPolicy(attempts=1, backoff_s=0)


def _client(server: FakeStreamServer, retries: RetryPolicy = FAST, **kwargs: Any) -> RuntimeClient:
    return RuntimeClient(BASE, transport=server.transport(), retries=retries, **kwargs)


async def _take(stream: EventStream, n: int) -> list[Any]:
    """The next `n` items; a stream that yields fewer fails the test instead of hanging it (a bound, not a wait)."""
    items = []
    with anyio.fail_after(10):
        async for item in stream:
            items.append(item)
            if len(items) == n:
                break
    return items


class UpperBound(RetryPolicy):
    """The retry policy without its jitter: every delay is the bound the jitter draws under."""

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))


N = 24


@pytest.mark.parametrize("mid_frame", [False, True], ids=["between-frames", "mid-frame"])
async def test_a_connection_broken_at_every_position_loses_and_repeats_no_event(mid_frame: bool) -> None:
    log = [event(i) for i in range(1, N + 1)]
    for cut in range(N + 1):
        connections: list[int] = []

        def plan(cursor: int, request: httpx.Request, cut: int = cut, connections: list[int] = connections) -> Script:
            connections.append(cursor)
            if len(connections) == 1:  # the first connection breaks after `cut` frames (and half of the next)
                chunks = [frame(e) for e in log[cursor : cursor + cut]]
                if mid_frame and cursor + cut < N:
                    chunks.append(frame(log[cursor + cut])[:9])
                return Script(chunks, end="break")
            # a reconnect replays a little before its cursor too: the client must skip what it has
            return Script([frame(e) for e in log[max(0, cursor - 3) :]])

        server = FakeStreamServer(events=log, plan=plan)
        async with _client(server) as rt, EventStream(rt, 0, sleep=Sleeps()) as stream:
            items = await _take(stream, N)
            assert [e.id for e in items] == list(range(1, N + 1)), f"cut at {cut}"
            assert stream.cursor == N
            assert stream.reconnects == (1 if cut < N else 0)  # all N came before the break: no reconnect yet
        first, *again = server.requests
        assert first.url.params["after"] == "0" and "last-event-id" not in first.headers
        assert [r.headers["last-event-id"] for r in again] == ([str(cut)] if cut < N else [])


async def test_the_server_ending_the_stream_is_a_reconnect_from_the_cursor() -> None:
    log = [event(i) for i in range(1, 7)]
    served: list[int] = []

    def plan(cursor: int, request: httpx.Request) -> Script:
        served.append(cursor)
        upto = cursor + 2
        return Script([frame(e) for e in log[cursor:upto]], end="close" if upto < len(log) else "open")

    server = FakeStreamServer(events=log, plan=plan)
    async with _client(server) as rt, EventStream(rt, 0, sleep=Sleeps()) as stream:
        assert [e.id for e in await _take(stream, 6)] == [1, 2, 3, 4, 5, 6]
    assert served == [0, 2, 4]
    assert server.closed == 3  # every connection closed, the last one by leaving the `async with`


async def test_runtime_stopping_is_yielded_then_the_stream_reconnects_with_backoff_until_it_is_back() -> None:
    log = [event(1), event(2, "runtime_stopping", worker_ref=None, data={})]
    down = {"left": 3}

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if len(server.requests) > 1 and down["left"]:
            down["left"] -= 1
            body = {"error": {"code": "runtime_unavailable", "message": "stopping", "details": {}, "retryable": True}}
            return httpx.Response(503, json=body)
        return None

    def plan(cursor: int, request: httpx.Request) -> Script:
        if cursor < 2:
            return Script([frame(e) for e in log[cursor:]], end="close")
        log.append(event(3, "runtime_started", worker_ref=None, data={"version": "0.2.0"}))
        return Script([frame(log[2])])

    server = FakeStreamServer(events=log, plan=plan, error=refuse)
    sleeps = Sleeps()
    retries = RetryPolicy(attempts=1, backoff_s=0.1, max_backoff_s=0.3)
    async with _client(server, retries) as rt, EventStream(rt, 0, sleep=sleeps) as stream:
        items = await _take(stream, 3)
    assert [type(e) for e in items] == [WorkerCreatedEvent, RuntimeStoppingEvent, type(items[2])]
    assert [e.id for e in items] == [1, 2, 3] and items[2].kind == "runtime_started"
    assert len(sleeps.delays) == 4  # one before each of the 3 refused reconnects and the one that worked
    assert all(0 <= d <= 0.3 for d in sleeps.delays)
    assert server.requests[-1].headers["last-event-id"] == "2"


async def test_reconnect_backoff_doubles_to_its_bound_and_restarts_after_a_good_connection() -> None:
    refusals = {"left": 6}

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if len(server.requests) > 1 and refusals["left"]:
            refusals["left"] -= 1
            return httpx.Response(502, text="bad gateway")  # a proxy's: the Runtime may come back
        return None

    def plan(cursor: int, request: httpx.Request) -> Script:
        return Script([frame(e) for e in log[cursor : cursor + 1]], end="break" if cursor == 0 else "open")

    log = [event(1), event(2)]
    server = FakeStreamServer(events=log, plan=plan, error=refuse)
    sleeps = Sleeps()
    policy = UpperBound(attempts=1, backoff_s=0.1, max_backoff_s=0.8)
    async with _client(server, policy) as rt, EventStream(rt, 0, sleep=sleeps) as stream:
        assert [e.id for e in await _take(stream, 2)] == [1, 2]
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.8, 0.8, 0.8])


async def test_the_first_connection_gives_up_after_the_retry_attempts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "runtime_unavailable", "message": "down", "details": {}, "retryable": True}}
        return httpx.Response(503, json=body)

    server = FakeStreamServer(error=refuse)
    sleeps = Sleeps()
    async with _client(server, RetryPolicy(attempts=3, backoff_s=0.1)) as rt, EventStream(rt, 0, sleep=sleeps) as s:
        with pytest.raises(RuntimeUnavailableError):
            await s.__anext__()
    assert len(server.requests) == 3 and len(sleeps.delays) == 2


async def test_cursor_errors_are_typed_and_raised_before_any_frame() -> None:
    server = FakeStreamServer(events=[event(i) for i in range(5, 9)], oldest_id=5)
    async with _client(server) as rt:
        with pytest.raises(CursorExpiredError) as expired:
            await rt.stream_events(after=2).__anext__()
        assert expired.value.details["oldest_id"] == 5 and expired.value.status == 410
        with pytest.raises(CursorAheadError) as ahead:
            await rt.stream_events(after=40).__anext__()
        assert ahead.value.newest_id == 8 and ahead.value.status == 422
        assert isinstance(ahead.value, InvalidRequestError)


async def test_a_cursor_above_the_newest_id_after_a_reconnect_is_raised() -> None:
    log = [event(1), event(2)]

    def plan(cursor: int, request: httpx.Request) -> Script:
        chunks = [frame(e) for e in log[cursor:]]
        log.clear()  # a memory store restarted: its log begins again, below the client's cursor
        return Script(chunks, end="break")

    server = FakeStreamServer(events=log, plan=plan)
    async with _client(server) as rt, EventStream(rt, 0, sleep=Sleeps()) as stream:
        assert [e.id for e in await _take(stream, 2)] == [1, 2]
        with pytest.raises(CursorAheadError) as ahead:
            await stream.__anext__()
    assert ahead.value.newest_id == 0 and stream.cursor == 2


async def test_a_changed_runtime_id_is_raised_at_the_reconnect() -> None:
    log = [event(1)]
    server = FakeStreamServer(
        events=log, plan=lambda cursor, request: Script([frame(e) for e in log[cursor:]], "break")
    )
    async with _client(server) as rt, EventStream(rt, 0, sleep=Sleeps()) as stream:
        assert (await stream.__anext__()).id == 1
        assert stream.runtime_id == "rt-1"  # learnt from the frame's worker_ref
        server.runtime_id = "rt-other"
        with pytest.raises(RuntimeChangedError) as changed:
            await stream.__anext__()
    assert changed.value.details == {"expected": "rt-1", "actual": "rt-other"}


async def test_a_frame_of_another_runtime_is_raised_not_yielded() -> None:
    server = FakeStreamServer(events=[event(1), event(2, runtime_id="rt-9")])
    async with _client(server, runtime_id="rt-1") as rt, rt.stream_events(after=0) as stream:
        assert (await stream.__anext__()).id == 1
        with pytest.raises(RuntimeChangedError):
            await stream.__anext__()
        assert stream.cursor == 1


async def test_frames_decode_to_typed_events_deltas_and_generic_unknown_kinds() -> None:
    newer = event(3, "run_paused", run_id="run-1", data={"why": "x"}, shiny_new_field=[1])
    newer_run = run_ended(4, "completed")
    newer_run["data"]["run"]["status"] = "weird_new_status"
    newer_run["data"]["run"]["error"] = {"code": "brand_new_code", "message": "m"}
    chunks = [
        b": keep-alive\n\n",
        frame(appended(1, 1, "hé")),
        frame(delta(2, 0, "wo")),
        b": keep-alive\n\n",
        frame(delta(2, 2, "rld")),
        frame(event(2)),
        frame(newer),
        frame(newer_run),
    ]
    server = FakeStreamServer(events=[event(i) for i in range(1, 5)], plan=lambda c, r: Script(chunks))
    async with _client(server) as rt, rt.stream_events(after=0, worker_id="w1", deltas=True) as stream:
        items = await _take(stream, 6)
        assert stream.cursor == 4
    first, d1, d2, created, unknown, ended = items
    assert isinstance(first, TranscriptAppendedEvent) and first.entry is not None and first.entry.content == "hé"
    assert first.data.sequence == 1
    assert isinstance(d1, OutputDelta) and (d1.sequence, d1.offset, d1.text) == (2, 0, "wo")
    assert isinstance(d2, OutputDelta) and d2.offset == 2
    assert isinstance(created, WorkerCreatedEvent) and created.data.profile == "default"
    assert isinstance(unknown, UnknownEvent) and unknown.kind == "run_paused" and unknown.data == {"why": "x"}
    assert isinstance(ended, RunCompletedEvent)
    assert ended.data.run.status == "weird_new_status" and ended.data.run.error is not None
    request = server.requests[0]
    assert dict(request.url.params) == {"after": "0", "worker_id": "w1", "deltas": "true"}
    assert request.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("unlogged_id", [None, 0])
async def test_a_runtime_stopping_that_was_not_logged_is_yielded_and_moves_no_cursor(unlogged_id: int | None) -> None:
    stopping = event(unlogged_id, "runtime_stopping", worker_ref=None, data={})
    chunks = [frame(event(1)), frame(stopping), frame(event(2))]
    server = FakeStreamServer(events=[event(1), event(2)], plan=lambda c, r: Script(chunks))
    async with _client(server) as rt, rt.stream_events(after=0) as stream:
        items = await _take(stream, 3)
        assert isinstance(items[1], RuntimeStoppingEvent) and items[1].id == unlogged_id
        assert [e.id for e in items] == [1, unlogged_id, 2] and stream.cursor == 2


async def test_a_known_kind_in_a_wrong_shape_is_a_protocol_error() -> None:
    chunks = [frame(event(1, "run_failed", data={"no_run": True}))]
    server = FakeStreamServer(events=[event(1)], plan=lambda c, r: Script(chunks))
    async with _client(server) as rt, rt.stream_events(after=0) as stream:
        with pytest.raises(ProtocolError):
            await stream.__anext__()


async def test_other_error_answers_are_raised_as_their_class_and_not_retried() -> None:
    def deny(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "unauthorized", "message": "no", "details": {}, "retryable": False}}
        return httpx.Response(401, json=body)

    server = FakeStreamServer(error=deny)
    async with _client(server, RetryPolicy(attempts=4, backoff_s=0)) as rt, rt.stream_events() as stream:
        with pytest.raises(UnauthorizedError):
            await stream.__anext__()
    assert len(server.requests) == 1


async def test_bad_arguments_fail_before_anything_is_sent() -> None:
    server = FakeStreamServer()
    async with _client(server) as rt:
        for kwargs in ({"run_id": "run-1"}, {"worker_id": "bad id"}, {"worker_id": "w1", "run_id": "a/b"}):
            with pytest.raises(InvalidRequestError):
                rt.stream_events(**kwargs)
        for after in (-1, True, "3"):
            with pytest.raises(InvalidRequestError):
                rt.stream_events(after=after)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError) as no_worker:
            rt.stream_events(run_id="run-1")
    assert no_worker.value.details == {"field": "run_id"}
    assert server.requests == []


async def test_a_live_stream_sends_no_cursor_and_leaving_it_closes_the_connection() -> None:
    server = FakeStreamServer(events=[event(1)])
    async with _client(server) as rt:
        stream = rt.stream_events()
        async with stream:
            server.events.append(event(2))
            server.plan = lambda cursor, request: Script([frame(server.events[1])])
            assert (await stream.__anext__()).id == 2
        assert server.closed == 1
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    request = server.requests[0]
    assert "after" not in request.url.params and "last-event-id" not in request.headers


async def test_a_live_stream_dropped_before_its_first_event_resumes_from_x_event_cursor() -> None:
    server = FakeStreamServer(events=[event(1)], event_cursor=True)
    connections: list[int] = []

    def plan(cursor: int, request: httpx.Request) -> Script:
        connections.append(cursor)
        if len(connections) == 1:
            server.events.append(event(2))  # logged while the first connection is open, then it breaks unread
            return Script([], end="break")
        return Script([frame(e) for e in server.after(cursor)])

    server.plan = plan
    async with _client(server) as rt, EventStream(rt, sleep=Sleeps()) as stream:
        assert [e.id for e in await _take(stream, 1)] == [2]  # not missed: the reconnect read on from 1
        assert stream.cursor == 2
    first, again = server.requests
    assert "after" not in first.url.params and "last-event-id" not in first.headers
    assert again.headers["last-event-id"] == "1"


@pytest.mark.parametrize(
    ("value", "cursor"), [("7", 7), (" 7 ", 7), ("", None), ("x1", None), ("-1", None), ("١", None)]
)
def test_only_an_event_id_in_x_event_cursor_becomes_the_cursor(value: str, cursor: int | None) -> None:
    response = httpx.Response(200, headers={"x-event-cursor": value.encode()})
    assert _event_cursor(response) == cursor
