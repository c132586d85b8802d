"""`EventStream`: ``GET /v1/events/stream`` as an async iterator of typed events that reconnects by itself.

The frames are parsed with `httpx-sse`; each durable frame decodes to core's typed event of its kind (an
`UnknownEvent` for a kind this version does not know) and each ``output_delta`` frame to an `OutputDelta`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent, SSEError

from worker_runtime_core import (
    CursorExpiredError,
    InvalidRequestError,
    OperationTimeoutError,
    RuntimeUnavailableError,
    StreamItem,
    WorkerRuntimeError,
    decode_event,
    decode_output_delta,
    generate_id,
    is_valid_id,
)

from ._errors import (
    CursorAheadError,
    ProtocolError,
    RuntimeChangedError,
    RuntimeMismatchError,
    TransportError,
)

if TYPE_CHECKING:
    from ._client import RuntimeClient

__all__ = ["EventStream"]

_PATH = "/v1/events/stream"
#: Bounds on reading a closed response to its end (`_finish`): a closed connection fails at once, after what it
#: had buffered.
_FINISH_S = 1.0
_FINISH_FRAMES = 10_000


class EventStream:
    """The Runtime's event stream, from a cursor, reconnecting by itself (``RuntimeClient.stream_events``)::

        async with rt.stream_events(after=cursor, worker_id=wid, deltas=True) as stream:
            async for item in stream:
                ...                      # typed events and OutputDelta
                save(stream.cursor)      # the last durable event id yielded

    It is an async iterator and an async context manager; leaving the ``async with`` (or `aclose`) closes the
    connection at once. After a dropped connection, or when the server ends the stream (``runtime_stopping`` at
    shutdown, which is yielded first), it reconnects with ``Last-Event-ID`` = its cursor, after a backoff with full
    jitter from the client's `RetryPolicy` (``backoff_s`` doubling to at most ``max_backoff_s``), until the caller
    stops. A durable event is never yielded twice (ids at or below the cursor are skipped); an output delta may be
    sent again after a reconnect (its ``(sequence, offset)`` addresses it). The first connection that fails
    ``retries.attempts`` times in a row raises (a wrong address should not hang).

    Attributes:
        cursor: the id of the last durable event yielded (the `after` it started from until then; for a
            live-only stream, the server's ``X-Event-Cursor`` once connected: the newest id when the stream
            opened, so a reconnect before the first event misses nothing logged in between).
        runtime_id: the runtime it reads, from the client, ``GET /v1/runtime`` or the first frame's ``worker_ref``.
        reconnects: how many times it connected again.

    Raises (from iteration):
        CursorExpiredError: the cursor is older than the events the server keeps.
        CursorAheadError: the cursor is above the newest event id (`.newest_id`; a memory store restarted).
        RuntimeChangedError: the server is now another runtime (its ids are another log's).
        ProtocolError: a frame that is not the contract's.
        WorkerRuntimeError: any other error answer (401, 422, ...), raised as core's class.
    """

    def __init__(
        self,
        client: RuntimeClient,
        after: int | None = None,
        *,
        worker_id: str | None = None,
        run_id: str | None = None,
        deltas: bool = False,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise InvalidRequestError(f"after must be an event id >= 0, not {after!r}", details={"field": "after"})
        for name, value in (("worker_id", worker_id), ("run_id", run_id)):
            if value is not None and not is_valid_id(value):
                raise InvalidRequestError(f"invalid {name} {value!r}", details={"field": name})
        if run_id is not None and worker_id is None:
            raise InvalidRequestError("run_id needs worker_id", details={"field": "run_id"})
        self.cursor: int | None = after
        self.runtime_id: str | None = client.runtime_id or client._seen_runtime_id
        self.reconnects = 0
        self._client = client
        self._params: dict[str, str] = {}
        if worker_id is not None:
            self._params["worker_id"] = worker_id
        if run_id is not None:
            self._params["run_id"] = run_id
        if deltas:
            self._params["deltas"] = "true"
        self._sleep = sleep
        self._response: httpx.Response | None = None
        self._frames: AsyncGenerator[ServerSentEvent, None] | None = None
        self._connected = False  # a connection was made once: from then on it reconnects without end
        self._failures = 0  # connections in a row that failed or ended before anything was yielded
        self._closed = False

    def __repr__(self) -> str:
        return f"EventStream(runtime_id={self.runtime_id!r}, cursor={self.cursor!r}, params={self._params!r})"

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the iterator then ends. Idempotent."""
        self._closed = True
        await self._drop()

    async def __anext__(self) -> StreamItem:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._frames is None:
                await self._connect()
            assert self._frames is not None
            try:
                frame = await self._frames.__anext__()
            except (StopAsyncIteration, httpx.TransportError, SSEError):
                # the server ended the stream (shutdown, a proxy) or the connection broke: read on from the cursor
                await self._drop()
                self._failures += 1
                continue
            item = self._item(frame)
            if item is not None:
                self._failures = 0
                return item

    # --- frames ------------------------------------------------------------------------------------------------

    def _item(self, frame: ServerSentEvent) -> StreamItem | None:
        """The frame's typed item, or None for a frame to skip (a durable event at or below the cursor)."""
        if not frame.data:
            return None
        try:
            if frame.event == "output_delta":
                delta = decode_output_delta(frame.data)
                self._check_runtime(delta.worker_ref.runtime_id)
                return delta
            event = decode_event(frame.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"GET {_PATH}: a {frame.event!r} frame outside the contract ({exc})") from None
        if event.worker_ref is not None:
            self._check_runtime(event.worker_ref.runtime_id)
        if not event.id:  # not durable (a runtime_stopping that could not be logged: id null or 0, as ids start
            return event  # at 1): yielded, and no cursor to move
        if self.cursor is not None and event.id <= self.cursor:
            return None
        self.cursor = event.id
        return event

    def _check_runtime(self, runtime_id: str) -> None:
        if self.runtime_id is None:
            self.runtime_id = runtime_id
        elif runtime_id != self.runtime_id:
            raise RuntimeChangedError(
                f"the event stream of {self._client.base_url} now comes from runtime {runtime_id!r}, "
                f"not {self.runtime_id!r}",
                details={"expected": self.runtime_id, "actual": runtime_id},
            )

    # --- connections -------------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        while True:
            if self._connected or self._failures:
                await self._sleep(self._client.retries.delay(max(1, self._failures)))
            try:
                await self._open()
            except (TransportError, RuntimeUnavailableError, OperationTimeoutError) as exc:
                self._failures += 1
                if not self._connected and self._failures >= self._client.retries.attempts:
                    raise exc
                continue
            except ProtocolError as exc:
                if exc.status != 502:  # a 502 without an error envelope is a proxy's: the Runtime may come back
                    raise
                self._failures += 1
                if not self._connected and self._failures >= self._client.retries.attempts:
                    raise
                continue
            if self._connected:
                self.reconnects += 1
            self._connected = True
            return

    async def _open(self) -> None:
        from ._client import _decode_error, _transport_error  # the client's own readings of an answer

        client = self._client
        if self._connected:
            await self._recheck_runtime()
        elif not client._checked:
            await client._check_identity()
            if self.runtime_id is None:
                self.runtime_id = client.runtime_id
        headers = dict(client._headers)
        headers.update({"accept": "text/event-stream", "cache-control": "no-store", "x-request-id": generate_id("req")})
        params = dict(self._params)
        if self.cursor is not None:
            if self._connected:
                headers["last-event-id"] = str(self.cursor)
            else:
                params["after"] = str(self.cursor)
        request = client._http.build_request(
            "GET", _PATH, params=params, headers=headers, timeout=client._stream_timeout()
        )
        try:
            response = await client._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _transport_error(exc, "GET", _PATH) from exc
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if response.status_code >= 400 or content_type != "text/event-stream":
            try:
                await response.aread()
            except httpx.TransportError as exc:
                raise _transport_error(exc, "GET", _PATH) from exc
            finally:
                await response.aclose()
            if response.status_code < 400:
                raise ProtocolError(
                    f"GET {_PATH}: HTTP {response.status_code} with content-type {content_type!r}, "
                    "not text/event-stream",
                    status=response.status_code,
                )
            raise _stream_error(_decode_error(response, "GET", _PATH))
        if self.cursor is None:  # live only, nothing yielded yet: resume from where the stream opened
            self.cursor = _event_cursor(response)
        self._response = response
        self._frames = EventSource(response).aiter_sse()

    async def _recheck_runtime(self) -> None:
        """Before reading on from the cursor: is the server still the runtime whose ids the cursor counts?"""
        try:
            summary = await self._client.runtime()
        except RuntimeMismatchError as exc:
            raise RuntimeChangedError(exc.message, details=exc.details) from None
        self._check_runtime(summary.runtime_id)

    async def _drop(self) -> None:
        frames, response = self._frames, self._response
        self._frames = self._response = None
        with anyio.CancelScope(shield=True):
            if response is not None:
                await response.aclose()
            if frames is not None:
                await _finish(frames)


async def _finish(frames: AsyncGenerator[ServerSentEvent, None]) -> None:
    """End the frame iterator of a closed response. httpx reads a body through a chain of async generators, and
    `aclose` on the outer one leaves the inner ones suspended, which trio reports when it collects them (httpx
    issue 3686). Reading on from the closed connection makes the innermost one fail, so every one of them ends;
    what was still buffered is dropped (the cursor has not moved past it)."""
    with anyio.move_on_after(_FINISH_S):
        try:
            for _ in range(_FINISH_FRAMES):
                await frames.__anext__()
        except Exception:  # the closed connection's error (or the end) ends the chain: expected
            pass
    await frames.aclose()


def _event_cursor(response: httpx.Response) -> int | None:
    """The stream's ``X-Event-Cursor`` (the newest event id when it opened), or None when absent or not an id."""
    value = response.headers.get("x-event-cursor", "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _stream_error(error: WorkerRuntimeError) -> WorkerRuntimeError:
    """The stream's own class for a cursor error; the others as they came."""
    if isinstance(error, CursorExpiredError):
        return error
    if type(error) is InvalidRequestError and "newest_id" in error.details:
        return CursorAheadError(error.message, details=error.details, status=error.status)
    return error
