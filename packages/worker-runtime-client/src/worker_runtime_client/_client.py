"""`RuntimeClient`: the typed async client of one Runtime process."""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx
import msgspec

from worker_runtime_core import (
    TERMINAL_RUN_STATUSES,
    CancelRequest,
    CreateWorkerRequest,
    Diagnostic,
    DiagnosticsEnvelope,
    ErrorEnvelope,
    Event,
    EventPage,
    InputAck,
    InputAckEnvelope,
    InputRequest,
    InvalidRequestError,
    InvalidWorkerIdError,
    OnBusy,
    OperationTimeoutError,
    QueueFullError,
    RequestsPage,
    RespondAck,
    RespondAckEnvelope,
    RespondRequest,
    RunEnvelope,
    RunInfo,
    RuntimeEnvelope,
    RuntimeSummary,
    StopRequest,
    TranscriptEntry,
    TranscriptEnvelope,
    TranscriptPage,
    WorkerAck,
    WorkerAckEnvelope,
    WorkerBusyError,
    WorkerDetail,
    WorkerEnvelope,
    WorkerExistsError,
    WorkerRuntimeError,
    WorkersPage,
    WorkerStatus,
    WorkerSummary,
    error_from_wire,
    generate_id,
    is_valid_id,
)

from ._config import DEFAULT_RETRY, DEFAULT_TIMEOUT, RetryPolicy
from ._errors import ProtocolError, RuntimeConnectionError, RuntimeMismatchError, RuntimeTimeoutError
from ._follow import RunFollower
from ._inbox import RequestInbox
from ._retry import Safety, retry_after_seconds, should_retry_response, should_retry_transport
from ._stream import EventStream
from ._version import __version__

__all__ = ["ClientState", "RuntimeClient"]

T = TypeVar("T")
_ENCODER = msgspec.json.Encoder()
_ERROR_DECODER = msgspec.json.Decoder(ErrorEnvelope)
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}
#: Pause between long-polls when the server allows no `wait` (``max_wait_s = 0``) and nothing came, so a watch
#: never spins on an empty log.
_NO_WAIT_PAUSE_S = 1.0


def _decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    return decoder


class ClientState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class RuntimeClient:
    """Drives one Runtime process. An async context manager over one pooled `httpx.AsyncClient`::

        async with RuntimeClient("http://127.0.0.1:8787", token=token, runtime_id="rt-eu-1") as rt:
            worker = await rt.create_worker()
            ack = await rt.send_input(worker.worker_ref.worker_id, "hello")
            run = await rt.wait_for_run(worker.worker_ref.worker_id, ack.run_id)

    Args:
        base_url: the Runtime's address.
        token: the bearer token (never shown in reprs or error messages).
        timeout: per-request `httpx.Timeout` (or seconds).
        retries: the `RetryPolicy` for what may be retried (see `_retry`).
        transport: an httpx transport to use instead of the network (tests: `httpx.ASGITransport`).
        client: an `httpx.AsyncClient` of the caller's; it is not closed by this client.
        runtime_id: when given, the first call checks that the server is this runtime and raises
            `RuntimeMismatchError` (sending no command) when it is not.

    Every method raises core's error classes for the server's error codes (with `.status` set), and
    `RuntimeConnectionError`, `RuntimeTimeoutError` or `ProtocolError` when no proper answer came.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        runtime_id: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.runtime_id = runtime_id
        self.retries = retries
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._headers = {"user-agent": f"worker-runtime-client/{__version__}", "accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._own_client = client is None
        self._http = client or httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=self._timeout)
        self._state = ClientState.UNOPENED
        self._checked = runtime_id is None
        self._check_lock: anyio.Lock | None = None
        self._max_wait_s: float | None = None  # the server's `limits.max_wait_s`, read once from GET /v1/runtime
        self._seen_runtime_id: str | None = None  # the runtime id GET /v1/runtime last answered
        self._heartbeat_s: float | None = None  # the server's `limits.stream_heartbeat_s`, when it says

    def __repr__(self) -> str:
        return f"RuntimeClient(base_url={self.base_url!r}, runtime_id={self.runtime_id!r})"

    async def __aenter__(self) -> RuntimeClient:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("a closed RuntimeClient cannot be reopened")
        self._state = ClientState.OPEN
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless the caller passed its own client)."""
        if self._state is not ClientState.CLOSED and self._own_client:
            await self._http.aclose()
        self._state = ClientState.CLOSED

    # --- the runtime -----------------------------------------------------------------------------------------

    async def runtime(self) -> RuntimeSummary:
        """``GET /v1/runtime``."""
        envelope = await self._call("GET", "/v1/runtime", RuntimeEnvelope, check=False)
        if self.runtime_id is not None and envelope.runtime.runtime_id != self.runtime_id:
            raise RuntimeMismatchError(
                f"{self.base_url} is runtime {envelope.runtime.runtime_id!r}, not {self.runtime_id!r}",
                details={"expected": self.runtime_id, "actual": envelope.runtime.runtime_id},
            )
        self._checked = True
        self._max_wait_s = envelope.runtime.limits.max_wait_s
        self._seen_runtime_id = envelope.runtime.runtime_id
        heartbeat = getattr(envelope.runtime.limits, "stream_heartbeat_s", None)  # a v1.1 limit
        self._heartbeat_s = float(heartbeat) if isinstance(heartbeat, int | float) else None
        return envelope.runtime

    async def diagnostics(self) -> list[Diagnostic]:
        """``GET /v1/diagnostics``."""
        return (await self._call("GET", "/v1/diagnostics", DiagnosticsEnvelope)).diagnostics

    # --- workers ---------------------------------------------------------------------------------------------

    async def list_workers(
        self, *, status: WorkerStatus | None = None, limit: int | None = None, after: str | None = None
    ) -> WorkersPage:
        """``GET /v1/workers``: one page, ordered by worker id."""
        params = _params(status=status, limit=limit, after=after)
        return await self._call("GET", "/v1/workers", WorkersPage, params=params)

    async def iter_workers(
        self, *, status: WorkerStatus | None = None, page_size: int | None = None
    ) -> AsyncIterator[WorkerSummary]:
        """Every Worker (optionally of one status), page after page."""
        after: str | None = None
        while True:
            page = await self.list_workers(status=status, limit=page_size, after=after)
            for worker in page.workers:
                yield worker
            if page.next_after is None:
                return
            after = page.next_after

    async def create_worker(self, request: CreateWorkerRequest | None = None, /, **fields: Any) -> WorkerDetail:
        """``POST /v1/workers``. The worker id is generated here when not given, so a retried create can never
        make a second Worker: a retry answered ``worker_exists`` returns the Worker the first attempt made.

        Raises:
            InvalidRequestError: a field is invalid (checked before anything is sent).
        """
        if request is not None and fields:
            raise TypeError("pass a CreateWorkerRequest or keyword fields, not both")
        source = msgspec.to_builtins(request if request is not None else fields)
        try:
            body = msgspec.convert(source, CreateWorkerRequest)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(f"invalid create request: {exc}") from None
        if body.worker_id is None:
            body = msgspec.structs.replace(body, worker_id=generate_id("w"))
        assert body.worker_id is not None
        attempts: list[int] = []
        try:
            envelope = await self._call("POST", "/v1/workers", WorkerEnvelope, body=body, attempts=attempts)
        except WorkerExistsError:
            if len(attempts) < 2:
                raise  # the first attempt was answered: the id was taken before us
            return await self.get_worker(body.worker_id)  # our own earlier attempt made it
        return envelope.worker

    async def get_worker(self, worker_id: str) -> WorkerDetail:
        """``GET /v1/workers/{worker_id}``."""
        return (await self._call("GET", _worker_path(worker_id), WorkerEnvelope)).worker

    async def delete_worker(self, worker_id: str) -> WorkerAck:
        """``DELETE /v1/workers/{worker_id}`` (a stopped Worker only)."""
        path = _worker_path(worker_id)
        return (await self._call("DELETE", path, WorkerAckEnvelope, safety=Safety.ONCE)).ack

    # --- input and runs --------------------------------------------------------------------------------------

    async def send_input(
        self,
        worker_id: str,
        content: str,
        *,
        kind: str = "user",
        input_id: str | None = None,
        on_busy: OnBusy = "reject",
    ) -> InputAck:
        """``POST /v1/workers/{worker_id}/input``. Always carries an `input_id` (generated when not given), and
        every retry repeats it, so a retry can never start a second run (nor queue one twice).

        `on_busy` says what happens while a run is active: ``reject`` (`WorkerBusyError`), ``enqueue`` (the ack
        has ``queued=True`` and ``input_sequence=None``; the run starts after those queued before it) or
        ``interrupt`` (the active run is cancelled, and the ack comes once this input's run has started).

        Raises:
            WorkerBusyError: a run is active (never retried; `.retry_after` holds the server's hint).
            QueueFullError: ``enqueue`` to a Worker whose queue is full (never retried; `.retry_after` likewise).
        """
        path = _worker_path(worker_id) + "/input"
        if input_id is not None and not is_valid_id(input_id):
            raise InvalidRequestError(f"invalid input_id {input_id!r}")
        body: msgspec.Struct
        if on_busy == "reject":  # the default is not sent: a server that predates `on_busy` takes the body too
            body = _RejectingInput(content=content, kind=kind, input_id=input_id or generate_id("in"))
        else:
            body = InputRequest(
                content=content,
                kind=kind,  # type: ignore[arg-type]
                input_id=input_id or generate_id("in"),
                on_busy=on_busy,
            )
        return (await self._call("POST", path, InputAckEnvelope, body=body)).ack

    async def get_run(self, worker_id: str, run_id: str) -> RunInfo:
        """``GET /v1/workers/{worker_id}/runs/{run_id}``."""
        path = f"{_worker_path(worker_id)}/runs/{_segment(run_id)}"
        return (await self._call("GET", path, RunEnvelope)).run

    async def wait_for_run(
        self,
        worker_id: str,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109  # a bounded wait is the point of this call
        *,
        poll_wait: float = 25.0,
    ) -> RunInfo:
        """Wait until a run has any terminal status (``timed_out`` included) and return it.

        Waits on the events long-poll of this Worker, not by polling the run; each poll waits `poll_wait`
        seconds at most, never more than the server's ``limits.max_wait_s``.

        Raises:
            OperationTimeoutError: `timeout` seconds passed first (the run goes on).
        """
        _check_wait(poll_wait, "poll_wait")
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            cursor = (await self.get_worker(worker_id)).last_event_id
            run = await self.get_run(worker_id, run_id)
            while run.status not in TERMINAL_RUN_STATUSES:
                page = await self._long_poll(cursor, worker_id, poll_wait)
                cursor = page.next_after
                if any(e.run_id == run_id and e.kind.startswith("run_") for e in page.events):
                    run = await self.get_run(worker_id, run_id)
            return run
        assert scope.cancelled_caught
        raise OperationTimeoutError(f"run {run_id} did not finish within {timeout}s", details={"run_id": run_id})

    async def stop_worker(self, worker_id: str, reason: str | None = None) -> WorkerAck:
        """``POST /v1/workers/{worker_id}/stop``: terminal and idempotent."""
        path = _worker_path(worker_id) + "/stop"
        return (await self._call("POST", path, WorkerAckEnvelope, body=StopRequest(reason=reason))).ack

    async def cancel_worker(self, worker_id: str, *, run_id: str | None = None, reason: str | None = None) -> WorkerAck:
        """``POST /v1/workers/{worker_id}/cancel``. Retried only when it names `run_id` (a cancel of "whatever runs
        now" could otherwise hit a newer run)."""
        path = _worker_path(worker_id) + "/cancel"
        body = CancelRequest(reason=reason, run_id=run_id)
        safety = Safety.REPEATABLE if run_id is not None else Safety.ONCE
        return (await self._call("POST", path, WorkerAckEnvelope, body=body, safety=safety)).ack

    # --- requests for input ----------------------------------------------------------------------------------

    async def respond(
        self,
        worker_id: str,
        run_id: str,
        request_id: str,
        *,
        approved: bool | None = None,
        content: str | None = None,
        response_id: str | None = None,
    ) -> RespondAck:
        """``POST /v1/workers/{worker_id}/runs/{run_id}/respond``: answer a waiting run's request for input (an
        approval with `approved`, a question with `content`). Always carries a `response_id` (generated when not
        given), and every retry (503, 504, an answer that never came) repeats it, so a retry that reaches a request
        the first attempt already answered gets that first ack (``duplicate=True``), not a 409.

        Raises:
            RequestNotFoundError: the run never issued `request_id`.
            RequestClosedError: the request is closed (answered by another call, timed out, or ended with its run).
            IdempotencyConflictError: `response_id` answered it with another answer.
            InvalidRequestError: the answer does not fit the request's kind, or a bad id.
        """
        path = f"{_worker_path(worker_id)}/runs/{_segment(run_id)}/respond"
        for name, value in (("request_id", request_id), ("response_id", response_id)):
            if (value is not None or name == "request_id") and not is_valid_id(value):
                raise InvalidRequestError(f"invalid {name} {value!r}", details={"field": name})
        body = RespondRequest(
            request_id=request_id, approved=approved, content=content, response_id=response_id or generate_id("resp")
        )
        return (await self._call("POST", path, RespondAckEnvelope, body=body)).ack

    async def list_requests(self, *, after: int = 0, limit: int | None = None) -> RequestsPage:
        """``GET /v1/requests``: one page of the open requests for input, in the order they opened (`next_after`
        is the next page's `after`, None on the last)."""
        return await self._call("GET", "/v1/requests", RequestsPage, params=_params(after=after, limit=limit))

    def open_requests(self, *, page_size: int | None = None) -> RequestInbox:
        """The requests for input of this runtime's Workers as they open and close: an approvals inbox that starts
        from ``GET /v1/requests`` and then follows the event stream, so it is whole again after a Backend
        restarts::

            async with rt.open_requests() as inbox:
                async for item in inbox:
                    if isinstance(item, RequestOpened) and item.request.kind == "approval":
                        await rt.respond(item.worker_ref.worker_id, item.run_id, item.request.request_id,
                                         approved=ask_a_human(item.request.prompt))

        `RequestInbox.open` holds what is open now. Raises what `list_requests` and `stream_events` raise.
        """
        return RequestInbox(self, page_size=page_size)

    # --- transcript and events -------------------------------------------------------------------------------

    async def transcript(
        self, worker_id: str, start: int = 0, limit: int | None = None, *, run_id: str | None = None
    ) -> TranscriptPage:
        """``GET /v1/workers/{worker_id}/transcript``: one page; with `run_id`, of that run's entries only (`start`
        stays a transcript sequence)."""
        path = _worker_path(worker_id) + "/transcript"
        params = _params(start=start, limit=limit, run_id=run_id)
        return (await self._call("GET", path, TranscriptEnvelope, params=params)).transcript

    async def iter_transcript(
        self, worker_id: str, start: int = 0, *, page_size: int | None = None, run_id: str | None = None
    ) -> AsyncIterator[TranscriptEntry]:
        """Every transcript entry from `start` (only `run_id`'s, when given), page after page."""
        next_start: int | None = start
        while next_start is not None:
            page = await self.transcript(worker_id, start=next_start, limit=page_size, run_id=run_id)
            for entry in page.items:
                yield entry
            next_start = page.next_start

    async def events(
        self, after: int = 0, limit: int | None = None, worker_id: str | None = None, wait: float | None = None
    ) -> EventPage:
        """``GET /v1/events``: one page; with `wait`, a long-poll that answers as soon as an event matches."""
        params = _params(after=after, limit=limit, worker_id=worker_id, wait=wait)
        timeout = self._timeout
        if wait:
            read = (timeout.read or 0.0) + wait
            timeout = httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)
        return await self._call("GET", "/v1/events", EventPage, params=params, http_timeout=timeout)

    async def watch_events(
        self, after: int = 0, *, worker_id: str | None = None, wait: float = 25.0
    ) -> AsyncIterator[Event]:
        """Every event after `after`, forever: long-polls, resumes from its cursor after a reconnect, and never
        yields an event twice. Each poll waits `wait` seconds at most, never more than the server's
        ``limits.max_wait_s``. Transport failures are retried with backoff; `CursorExpiredError` is raised."""
        _check_wait(wait, "wait")
        cursor = after
        failures = 0
        while True:
            try:
                page = await self._long_poll(cursor, worker_id, wait)
            except (RuntimeConnectionError, RuntimeTimeoutError) as exc:
                failures += 1
                if failures >= self.retries.attempts:
                    raise exc
                await anyio.sleep(self.retries.delay(failures))
                continue
            failures = 0
            for event in page.events:
                if event.id > cursor:
                    cursor = event.id
                    yield event

    def stream_events(
        self,
        after: int | None = None,
        *,
        worker_id: str | None = None,
        run_id: str | None = None,
        deltas: bool = False,
    ) -> EventStream:
        """``GET /v1/events/stream``: typed events (and, with `deltas`, `OutputDelta`) as they are logged.

        With `after` it starts with the first event above it (``after=0``: from the oldest kept); without, it is
        live only (``tail -f``: the events logged after it opened, also across a reconnect before the first one,
        from the server's ``X-Event-Cursor``). `run_id` needs `worker_id`. The `EventStream` it returns
        is an async iterator and an async context manager (leaving it closes the connection); it reconnects by
        itself with ``Last-Event-ID``, never yields a durable event twice and exposes its `cursor`::

            async with rt.stream_events(after=0, worker_id=wid) as stream:
                async for event in stream:
                    print(event.kind, stream.cursor)

        Raises:
            InvalidRequestError: a bad `after`, `worker_id` or `run_id` (checked before anything is sent).
        """
        return EventStream(self, after, worker_id=worker_id, run_id=run_id, deltas=deltas)

    def follow_run(self, worker_id: str, run_id: str) -> RunFollower:
        """One run's text as it grows, then its end: `TextDelta` pieces, an `EntryDone` per entry, one `RunDone`.

        It starts from the run's state, so a run that ended before it was called is shown whole (its entries
        from the transcript) and then its `RunDone`::

            async with rt.follow_run(wid, ack.run_id) as follow:
                async for item in follow:
                    if isinstance(item, TextDelta):
                        print(item.text, end="", flush=True)
                    elif isinstance(item, RunDone):
                        print("\n", item.run.status)

        Raises:
            InvalidWorkerIdError, InvalidRequestError: a bad id (checked before anything is sent).
            RunNotFoundError: the Worker has no such run; and what `stream_events` raises.
        """
        _worker_path(worker_id)
        _segment(run_id)
        return RunFollower(self, worker_id, run_id)

    # --- plumbing --------------------------------------------------------------------------------------------

    async def _long_poll(self, after: int, worker_id: str | None, wait: float) -> EventPage:
        """One events long-poll of at most `wait` seconds, capped at the server's `max_wait_s` (read once). A
        server that refuses the `wait` (restarted with a lower limit) gets its limit read again, once."""
        capped = await self._capped_wait(wait)
        try:
            page = await self.events(after=after, worker_id=worker_id, wait=capped)
        except InvalidRequestError as exc:
            if exc.details.get("field") != "wait":
                raise
            self._max_wait_s = None
            capped = await self._capped_wait(wait)
            page = await self.events(after=after, worker_id=worker_id, wait=capped)
        if not capped and not page.events:
            await anyio.sleep(_NO_WAIT_PAUSE_S)
        return page

    async def _capped_wait(self, wait: float) -> float:
        if self._max_wait_s is None:
            async with self._lock():
                if self._max_wait_s is None:
                    await self.runtime()
        assert self._max_wait_s is not None
        return min(wait, self._max_wait_s)

    def _stream_timeout(self) -> httpx.Timeout:
        """An event stream's timeouts: the client's, with a read timeout long enough for the server's heartbeat
        (a read timeout only makes the stream reconnect from its cursor, which loses nothing)."""
        timeout = self._timeout
        if timeout.read is None or self._heartbeat_s is None:
            return timeout
        read = max(timeout.read, 2 * self._heartbeat_s + 5.0)
        return httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)

    def _lock(self) -> anyio.Lock:
        if self._check_lock is None:
            self._check_lock = anyio.Lock()
        return self._check_lock

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: Mapping[str, str] | None = None,
        safety: Safety = Safety.REPEATABLE,
        http_timeout: httpx.Timeout | None = None,
        check: bool = True,
        attempts: list[int] | None = None,
    ) -> T:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this RuntimeClient is closed")
        if check and not self._checked:
            await self._check_identity()
        content = _ENCODER.encode(body) if body is not None else None
        headers = dict(self._headers)
        headers["x-request-id"] = generate_id("req")  # the same on every retry of this call
        if content is not None:
            headers["content-type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            if attempts is not None:
                attempts.append(attempt)
            try:
                response = await self._http.request(
                    method, path, content=content, params=params, headers=headers, timeout=http_timeout or self._timeout
                )
            except httpx.TransportError as exc:
                if attempt < self.retries.attempts and should_retry_transport(exc, safety):
                    await anyio.sleep(self.retries.delay(attempt))
                    continue
                raise _transport_error(exc, method, path) from exc
            if response.status_code < 400:
                return _decode_success(response, type_, method, path)
            error = _decode_error(response, method, path)
            code = None if isinstance(error, ProtocolError) else error.code
            if attempt < self.retries.attempts and should_retry_response(response.status_code, code, safety):
                await anyio.sleep(self.retries.delay(attempt, retry_after_seconds(response)))
                continue
            raise error

    async def _check_identity(self) -> None:
        async with self._lock():
            if not self._checked:
                await self.runtime()


def _params(**values: object) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _check_wait(wait: float, name: str) -> None:
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:  # `not >=` refuses NaN too
        raise InvalidRequestError(f"{name} must be a number of seconds >= 0, not {wait!r}", details={"field": name})


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise InvalidRequestError(f"invalid id {value!r}")
    return httpx.URL(path=value).raw_path.decode()  # percent-encodes what a path segment cannot hold


def _worker_path(worker_id: str) -> str:
    if not is_valid_id(worker_id):
        raise InvalidWorkerIdError(f"invalid worker id {worker_id!r}", details={"worker_id": str(worker_id)[:200]})
    return f"/v1/workers/{worker_id}"


def _decode_success(response: httpx.Response, type_: type[T], method: str, path: str) -> T:
    try:
        return _decoder(type_).decode(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"{method} {path}: HTTP {response.status_code} with an unexpected body ({exc}): {_snippet(response)}",
            status=response.status_code,
        ) from None


class _RejectingInput(msgspec.Struct, frozen=True, kw_only=True):
    """An input body with the default `on_busy` (``reject``), which is left out."""

    content: str
    kind: str
    input_id: str


def _decode_error(response: httpx.Response, method: str, path: str) -> WorkerRuntimeError:
    try:
        body = _ERROR_DECODER.decode(response.content).error
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return ProtocolError(
            f"{method} {path}: HTTP {response.status_code} without an error envelope: {_snippet(response)}",
            status=response.status_code,
        )
    error = error_from_wire(
        body.code, body.message, body.details, status=response.status_code, retryable=body.retryable
    )
    if isinstance(error, WorkerBusyError | QueueFullError):
        error.retry_after = retry_after_seconds(response)
    return error


def _snippet(response: httpx.Response) -> str:
    text = response.content[:200].decode(errors="replace")
    return json.dumps(text)


def _transport_error(exc: httpx.TransportError, method: str, path: str) -> WorkerRuntimeError:
    what = f"{method} {path}: {type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException):
        return RuntimeTimeoutError(f"{what}: no answer in time")
    return RuntimeConnectionError(f"{what}: {exc}" if str(exc) else what)
