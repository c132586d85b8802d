"""``GET /v1/events/stream``: the event log as Server-Sent Events, resumable by event id.

The handler (`stream_events`) checks everything before the first frame: query parameters, ``Last-Event-ID``,
the cursor (410 `cursor_expired`, 422 above the newest id) and `max_streams`; any of them is a JSON error like on
every route. Then `EventStream` sends frames straight through ASGI (what Starlette's `StreamingResponse` does,
without its per-response objects), with the header ``X-Event-Cursor`` (the newest event id when it opened: where
a client that has no cursor yet resumes from): a page of durable events read from the log, one ``send`` per page, then a
wait for the next write; a ``: keep-alive`` comment after `stream_heartbeat_s` of silence; at shutdown the
``runtime_stopping`` frame, then the end.

A consumer that reads slowly holds back its own ``send`` only (the server's flow control): its stream reads the
next page when the last one is written, so it costs one page of memory and never slows the Runtime or another
stream. A disconnect ends the stream at once: a task per stream watches ``receive`` for it.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from worker_runtime_core import (
    DeltaSubscription,
    InvalidRequestError,
    Runtime,
    RuntimeUnavailableError,
    StreamEvent,
    StreamPage,
    WorkerRuntimeError,
)

from ._request import QUERY_INT_MAX, parse_query, query_int

__all__ = ["EventStream", "STREAM_QUERY", "Streams", "stream_events"]

logger = logging.getLogger("worker_runtime_http")

STREAM_QUERY = frozenset({"after", "worker_id", "run_id", "deltas"})
#: Events read (and sent in one ``send``) at a time: bounds a stream's memory, entries included.
PAGE = 100
#: Deltas are coalesced: `pending` is asked at most this often (at most one frame per entry per 20 ms).
DELTA_INTERVAL_S = 0.02
#: Pages kept for the streams that read the same one before the next write (live streams at one cursor).
_SHARED_PAGES = 16
_KEEP_ALIVE = b": keep-alive\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # a proxy in front (nginx) passes frames on as they come
]


class Streams:
    """The streams open now (`max_streams` bounds them), and the pages they read since the log's last write.

    Every live stream is woken by each write and reads the page above its cursor: those at one cursor with one
    filter read the same page, so it is read once per write (kept until the newest id moves, a few at most)."""

    __slots__ = ("_pages", "_signal", "open")

    def __init__(self) -> None:
        self.open = 0
        #: The signal the pages were read under: they stand until it is set (the next confirmed write).
        self._signal: anyio.Event | None = None
        self._pages: dict[tuple[int, str | None, str | None], StreamPage] = {}

    async def read(self, runtime: Runtime, cursor: int, worker_id: str | None, run_id: str | None) -> StreamPage:
        """`runtime.read_stream(cursor, PAGE, ...)`, shared by the streams that ask for it before the next write.

        A page is kept only when no write was confirmed while it was read (the signal armed before the read is
        still unset), and only until the next one: the store's committed id may move before what it committed
        is readable, so it cannot date a page; the journal's confirmation can."""
        signal = runtime.event_signal()  # armed before the read
        pages = self._pages
        if signal is not self._signal:
            pages.clear()
            self._signal = signal
        key = (cursor, worker_id, run_id)
        page = pages.get(key)
        if page is None:
            page = await runtime.read_stream(cursor, PAGE, worker_id=worker_id, run_id=run_id)
            # Only the live tail is shared (a replay's pages are its own): kept while no write has come since.
            if not page.has_more and not signal.is_set() and self._signal is signal and len(pages) < _SHARED_PAGES:
                pages[key] = page
        return page


async def stream_events(runtime: Runtime, streams: Streams, scope: Scope, encoder: msgspec.json.Encoder) -> EventStream:
    """Check a stream request and read its first page: every error is raised here, before any frame."""
    query = parse_query(scope, STREAM_QUERY)
    after = query_int(query, "after")
    worker_id = query.get("worker_id")
    run_id = query.get("run_id")
    deltas = _flag(query, "deltas")
    last_id = _last_event_id(scope)
    cursor = last_id if last_id is not None else after
    stop = runtime.stopping_frame
    live_only = cursor is None
    newest = runtime.newest_event_id  # sent as X-Event-Cursor: a live-only client's cursor before its first frame
    if cursor is None:
        cursor = newest  # live only: what is logged after the stream opened
    signal = runtime.event_signal()  # before the read: a write confirmed during it wakes the stream's first wait
    page = await runtime.read_stream(cursor, PAGE, worker_id=worker_id, run_id=run_id)  # the checks of the cursor
    if stop is not None and (live_only or stop.id == 0 or cursor >= stop.id):
        raise RuntimeUnavailableError("the Runtime is stopping; reconnect once it has restarted")
    limit = runtime.limits.max_streams
    if streams.open >= limit:
        raise RuntimeUnavailableError(
            f"this Runtime serves at most {limit} event streams at once (max_streams); retry later",
            details={"max_streams": limit},
        )
    subscription: DeltaSubscription | None = None
    if deltas:
        subscription = runtime.open_deltas(worker_id=worker_id, run_id=run_id)
    streams.open += 1  # the app calls the stream at once; its end gives the slot back
    return EventStream(
        runtime, streams, encoder, page, signal, stop is not None, worker_id, run_id, subscription, newest
    )


def _flag(query: dict[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise InvalidRequestError(f"{name} must be true or false, not {value[:100]!r}", details={"field": name})


def _last_event_id(scope: Scope) -> int | None:
    """The ``Last-Event-ID`` header as a cursor (absent or empty: None); anything but an event id is 422."""
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            text = value.decode("latin-1").strip()
            if not text:
                return None
            if not text.isdigit() or not text.isascii() or int(text) > QUERY_INT_MAX:
                raise InvalidRequestError(
                    f"Last-Event-ID must be an event id (an integer >= 0), not {text[:100]!r}",
                    details={"field": "Last-Event-ID"},
                )
            return int(text)
    return None


class EventStream:
    """One open stream: sends its frames until the client goes or the Runtime stops."""

    __slots__ = (
        "_encoder",
        "_first",
        "_newest",
        "_run_id",
        "_signal",
        "_runtime",
        "_stopping_before",
        "_streams",
        "_subscription",
        "_worker_id",
    )

    def __init__(
        self,
        runtime: Runtime,
        streams: Streams,
        encoder: msgspec.json.Encoder,
        first: StreamPage,
        signal: anyio.Event,
        stopping_before: bool,
        worker_id: str | None,
        run_id: str | None,
        subscription: DeltaSubscription | None,
        newest: int = 0,
    ) -> None:
        self._runtime = runtime
        self._streams = streams
        self._encoder = encoder
        self._first: StreamPage | None = first
        self._signal = signal  # taken before the first page was read
        self._stopping_before = stopping_before  # the Runtime had resolved its runtime_stopping before that read
        self._worker_id = worker_id
        self._run_id = run_id
        self._subscription = subscription
        self._newest = newest  # the newest event id when the stream opened

    async def __call__(self, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_disconnect, receive, tg.cancel_scope)
                cursor = [(b"x-event-cursor", b"%d" % self._newest)]
                await send({"type": "http.response.start", "status": 200, "headers": _HEADERS + cursor + headers})
                try:
                    await self._pump(send)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the connection went while a frame was written
                    pass
                except WorkerRuntimeError as exc:  # frames were sent: no error body now; the client reconnects
                    logger.info("an event stream ends: %s", exc.message)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        finally:
            self._streams.open -= 1
            if self._subscription is not None:
                self._subscription.close()

    async def _pump(self, send: Send) -> None:
        rt = self._runtime
        heartbeat = rt.limits.stream_heartbeat_s
        encode = self._encoder.encode
        subscription = self._subscription
        page, self._first = self._first, None
        assert page is not None
        resolved_before = self._stopping_before
        signal = self._signal
        next_deltas = 0.0
        asked: int | None = None  # the cursor `pending` was last asked with
        while True:
            # Events at or above the id of runtime_stopping are not sent: they are read after the restart. The
            # Runtime stages runtime_stopping (the bound) before any later event exists, so a bound read after the
            # page covers every event in it.
            bound = rt.stream_bound
            chunks: list[bytes] = []
            reached = stop_sent = False
            for event in page.events:
                if bound is not None and event.id >= bound:
                    if event.id == bound and event.kind == "runtime_stopping":
                        chunks.append(_frame(event, encode))
                        stop_sent = True
                    reached = True
                    break
                chunks.append(_frame(event, encode))
            cursor = page.next_after
            if chunks:
                await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
            if bound is not None and (reached or (resolved_before and not page.has_more)):
                if not stop_sent:
                    await self._send_stopping(send)
                return
            if not page.has_more:
                if subscription is None:
                    with anyio.move_on_after(heartbeat) as waited:
                        await signal.wait()
                    silent = waited.cancelled_caught
                else:
                    silent = False
                    clock = quiet = anyio.current_time()  # `quiet`: the last frame sent, or the wait's start
                    while True:  # deltas until the next durable write (which is sent first) or a heartbeat
                        with anyio.CancelScope(deadline=quiet + heartbeat) as waited:
                            while True:
                                # A moved cursor may let entries through that `wait` does not wake for: ask now.
                                if cursor != asked or clock >= next_deltas:
                                    if clock < next_deltas:
                                        await anyio.sleep(next_deltas - clock)  # coalescing: one frame per 20 ms
                                        clock = anyio.current_time()
                                    asked = cursor
                                    next_deltas = clock + DELTA_INTERVAL_S
                                    if await self._send_deltas(send, subscription, cursor):
                                        quiet = clock
                                # One waiter: the subscription's wait returns on new text and on a durable write.
                                if signal.is_set():
                                    break
                                await subscription.wait()
                                if signal.is_set():
                                    break
                                clock = anyio.current_time()
                                if clock < next_deltas:  # coalescing: at most one frame per entry per 20 ms
                                    with anyio.move_on_after(next_deltas - clock):
                                        await signal.wait()  # a durable write ends the pause: it is sent first
                                    if signal.is_set():
                                        break
                                    clock = anyio.current_time()
                        if not waited.cancelled_caught:
                            break
                        # The deadline is not moved on each frame (that costs a timer per delta): when it comes,
                        # the stream was silent only if no frame went since.
                        clock = anyio.current_time()
                        if clock >= quiet + heartbeat:
                            silent = True
                            break
                if silent:
                    await send({"type": "http.response.body", "body": _KEEP_ALIVE, "more_body": True})
            resolved_before = rt.stopping_frame is not None
            signal = rt.event_signal()  # before the read: a write confirmed during it still wakes the next wait
            page = await self._streams.read(rt, cursor, self._worker_id, self._run_id)

    async def _send_stopping(self, send: Send) -> None:
        rt = self._runtime
        stop = rt.stopping_frame
        while stop is None:  # staged and being written: its outcome wakes the readers
            await rt.event_signal().wait()
            stop = rt.stopping_frame
        await send({"type": "http.response.body", "body": _frame(stop, self._encoder.encode), "more_body": True})

    async def _send_deltas(self, send: Send, subscription: DeltaSubscription, cursor: int) -> bool:
        """Send what the subscription has for entries begun up to `cursor`; True if it had something."""
        deltas = subscription.pending(cursor)
        if not deltas:
            return False
        encode = self._encoder.encode
        body = b"".join(b"event: output_delta\ndata: %s\n\n" % encode(delta) for delta in deltas)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        return True


def _frame(event: StreamEvent, encode: Any) -> bytes:
    data: bytes = encode(event)
    if event.id == 0:  # a runtime_stopping that could not be logged has no id to resume from
        return b"event: %s\ndata: %s\n\n" % (event.kind.encode(), data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), data)


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
