"""One function per endpoint, and `ENDPOINTS`: the table the app routes by and the OpenAPI document describes.

A handler decodes with msgspec, calls the `Runtime` and encodes with msgspec; it returns the status and the
encoded envelope and raises core's typed errors for everything else. No Worker semantics live here.

The app has checked Host, Origin, token and route; every handler then checks, in this order, its path id (400),
its query parameters (422), and only then reads the body: media type and size (415/413), then its content
(400/422). So a bad path id or an unknown parameter is reported whatever the body is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import msgspec
from starlette.types import Receive, Scope

from worker_runtime_core import (
    ID_PATTERN,
    CancelRequest,
    CreateWorkerRequest,
    DiagnosticsEnvelope,
    ErrorEnvelope,
    EventPage,
    InputAckEnvelope,
    InputRequest,
    InvalidInputError,
    InvalidRequestError,
    RequestsPage,
    RespondAckEnvelope,
    RespondRequest,
    RunEnvelope,
    Runtime,
    RuntimeEnvelope,
    RuntimeUnavailableError,
    StopRequest,
    StreamEvent,
    TranscriptEnvelope,
    WorkerAckEnvelope,
    WorkerEnvelope,
    WorkerRuntimeError,
    WorkersPage,
)

from . import stream
from ._request import (
    QUERY_INT_MAX,
    ClientGone,
    decode_body,
    parse_query,
    query_float,
    query_int,
    read_body,
    worker_id,
)

__all__ = ["ENDPOINTS", "ID_SCHEMA", "Context", "Endpoint", "HealthStatus", "QueryParam", "Reply"]

Reply = tuple[int, bytes]


class HealthStatus(msgspec.Struct, frozen=True):
    """Liveness or readiness: ``ok``; ``stopping`` while the Runtime stops or recovers; ``store_unavailable`` while
    its store cannot write (readiness only). Nothing else."""

    status: Literal["ok", "stopping", "store_unavailable"]


class Context:
    """What handlers share: the Runtime, the body limit, and the encoder and decoders built once."""

    __slots__ = ("encoder", "max_body_bytes", "openapi", "runtime", "streams")

    def __init__(self, runtime: Runtime, openapi: Callable[[], bytes]) -> None:
        self.runtime = runtime
        self.streams = stream.Streams()
        self.max_body_bytes = runtime.limits.max_body_bytes
        self.encoder = msgspec.json.Encoder()
        self.openapi = openapi


#: A handler answers with a status and a body, or (the event stream) with a stream that sends its own frames.
Handler = Callable[[Context, Scope, Receive, dict[str, Any]], Awaitable[Reply | stream.EventStream]]

_CREATE = msgspec.json.Decoder(CreateWorkerRequest)
_INPUT = msgspec.json.Decoder(InputRequest)
_STOP = msgspec.json.Decoder(StopRequest)
_CANCEL = msgspec.json.Decoder(CancelRequest)
_RESPOND = msgspec.json.Decoder(RespondRequest)
_OK = msgspec.json.encode(HealthStatus("ok"))
_STOPPING = msgspec.json.encode(HealthStatus("stopping"))
_STORE_UNAVAILABLE = msgspec.json.encode(HealthStatus("store_unavailable"))
_NO_QUERY: frozenset[str] = frozenset()
_WORKERS_QUERY = frozenset({"status", "limit", "after"})
_TRANSCRIPT_QUERY = frozenset({"start", "limit", "run_id"})
_EVENTS_QUERY = frozenset({"after", "limit", "worker_id", "wait"})
_REQUESTS_QUERY = frozenset({"after", "limit"})


# --- health --------------------------------------------------------------------------------------------------


async def healthz(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    return 200, _OK  # probes may add what they like to the query: it is ignored


async def readyz(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    runtime = ctx.runtime
    if runtime.status != "running":
        return 503, _STOPPING
    if runtime.store_health != "ok":  # a refused write until the next succeeds; an unknown outcome until restart
        return 503, _STORE_UNAVAILABLE
    return 200, _OK


async def openapi(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    parse_query(scope, _NO_QUERY)
    return 200, ctx.openapi()


# --- runtime -------------------------------------------------------------------------------------------------


def _require_started(runtime: Runtime) -> None:
    """The summary and diagnostics mean nothing before the Runtime has opened its store (the process serves HTTP
    while the store recovers)."""
    if runtime.status == "new":
        raise RuntimeUnavailableError("the Runtime is starting (recovering its store); retry shortly")


async def get_runtime(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    parse_query(scope, _NO_QUERY)
    _require_started(ctx.runtime)
    return 200, ctx.encoder.encode(RuntimeEnvelope(await ctx.runtime.summary()))


async def get_diagnostics(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    parse_query(scope, _NO_QUERY)
    _require_started(ctx.runtime)
    return 200, ctx.encoder.encode(DiagnosticsEnvelope(await ctx.runtime.diagnostics()))


async def read_events(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    query = parse_query(scope, _EVENTS_QUERY)
    after = query_int(query, "after")
    limit = query_int(query, "limit")
    wait = query_float(query, "wait")
    wid = query.get("worker_id")
    rt = ctx.runtime
    if not wait:
        page = await rt.read_events(after=after or 0, limit=limit, worker_id=wid)
        return 200, ctx.encoder.encode(page)
    # A long poll: answer when an event matches or `wait` passes, and give up early when the client goes.
    result: EventPage | None = None
    error: WorkerRuntimeError | None = None
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch_disconnect)
        try:
            result = await rt.read_events(after=after or 0, limit=limit, worker_id=wid, wait=wait)
        except WorkerRuntimeError as exc:
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    if result is None:
        raise ClientGone
    return 200, ctx.encoder.encode(result)


async def stream_events(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> stream.EventStream:
    return await stream.stream_events(ctx.runtime, ctx.streams, scope, ctx.encoder)


# --- workers -------------------------------------------------------------------------------------------------


async def list_workers(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    query = parse_query(scope, _WORKERS_QUERY)
    status = query.get("status")
    page: WorkersPage = await ctx.runtime.list_workers(
        status=status,  # type: ignore[arg-type]  # the Runtime checks the value (422 invalid_request)
        limit=query_int(query, "limit"),
        after=query.get("after"),
    )
    return 200, ctx.encoder.encode(page)


async def create_worker(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    parse_query(scope, _NO_QUERY)
    request = decode_body(await read_body(scope, receive, ctx.max_body_bytes), _CREATE, InvalidRequestError)
    return 201, ctx.encoder.encode(WorkerEnvelope(await ctx.runtime.create_worker(request)))


async def get_worker(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    return 200, ctx.encoder.encode(WorkerEnvelope(await ctx.runtime.get_worker(wid)))


async def delete_worker(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    return 200, ctx.encoder.encode(WorkerAckEnvelope(await ctx.runtime.delete_worker(wid)))


async def get_run(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    return 200, ctx.encoder.encode(RunEnvelope(await ctx.runtime.get_run(wid, params["run_id"])))


async def send_input(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    request = decode_body(await read_body(scope, receive, ctx.max_body_bytes), _INPUT, InvalidInputError)
    ack = await ctx.runtime.send_input(
        wid, request.content, kind=request.kind, input_id=request.input_id, on_busy=request.on_busy
    )
    return 202, ctx.encoder.encode(InputAckEnvelope(ack))


async def stop_worker(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    request = decode_body(await read_body(scope, receive, ctx.max_body_bytes), _STOP, InvalidRequestError)
    return 200, ctx.encoder.encode(WorkerAckEnvelope(await ctx.runtime.stop_worker(wid, reason=request.reason)))


async def cancel_worker(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    request = decode_body(await read_body(scope, receive, ctx.max_body_bytes), _CANCEL, InvalidRequestError)
    ack = await ctx.runtime.cancel_worker(wid, run_id=request.run_id, reason=request.reason)
    return 200, ctx.encoder.encode(WorkerAckEnvelope(ack))


async def respond(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    parse_query(scope, _NO_QUERY)
    request = decode_body(await read_body(scope, receive, ctx.max_body_bytes), _RESPOND, InvalidRequestError)
    ack = await ctx.runtime.respond(
        wid,
        params["run_id"],
        request.request_id,
        approved=request.approved,
        content=request.content,
        response_id=request.response_id,
    )
    return 200, ctx.encoder.encode(RespondAckEnvelope(ack))


async def list_requests(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    query = parse_query(scope, _REQUESTS_QUERY)
    after = query_int(query, "after")
    page: RequestsPage = await ctx.runtime.open_requests(
        after=0 if after is None else after, limit=query_int(query, "limit")
    )
    return 200, ctx.encoder.encode(page)


async def read_transcript(ctx: Context, scope: Scope, receive: Receive, params: dict[str, Any]) -> Reply:
    wid = worker_id(params)
    query = parse_query(scope, _TRANSCRIPT_QUERY)
    start = query_int(query, "start")
    page = await ctx.runtime.transcript(
        wid, start=0 if start is None else start, limit=query_int(query, "limit"), run_id=query.get("run_id")
    )
    return 200, ctx.encoder.encode(TranscriptEnvelope(page))


# --- the table -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParam:
    """A query parameter as the OpenAPI document shows it.

    `description` may name limits as ``{max_page}``; `maximum` names the limit that is the schema's ``maximum``.
    Both take the values of the process's limits (see `openapi.build_openapi`).
    """

    name: str
    schema: dict[str, Any]
    description: str
    maximum: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """A route: method, path, handler, and what the OpenAPI document says about it.

    `errors` are the wire codes this route answers beside the ones every route shares (see `openapi.py`).
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    status: int
    response: Any
    request: Any = None
    request_required: bool = False
    query: tuple[QueryParam, ...] = ()
    errors: tuple[str, ...] = ()
    public: bool = False
    description: str = ""
    alternatives: dict[int, Any] = field(default_factory=dict)
    media_type: str = "application/json"
    headers: tuple[QueryParam, ...] = ()


_LIMIT = QueryParam(
    "limit",
    {"type": "integer", "minimum": 1},
    "Page size: `default_page` ({default_page}) when absent, at most `max_page` ({max_page}); more is 422 "
    "`limit_too_large`.",
    maximum="max_page",
)
#: A cursor or a sequence in a query: 0 to a signed 64-bit integer's maximum.
_COUNT_SCHEMA: dict[str, Any] = {"type": "integer", "format": "int64", "minimum": 0, "maximum": QUERY_INT_MAX}
#: An id as a parameter (path or query) shows in the document: the id pattern and its length.
ID_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN}
_WORKER_ID_QUERY = QueryParam(
    "worker_id",
    ID_SCHEMA,
    "Only events naming this Worker (a deleted Worker's events too).",
)

#: Every route of the app, hot ones first (the router tries them in this order).
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/workers/{worker_id}/input",
        send_input,
        "sendInput",
        "Send input to a Worker: starts one run",
        202,
        InputAckEnvelope,
        request=InputRequest,
        request_required=True,
        errors=(
            "invalid_worker_id",
            "invalid_input",
            "unknown_profile",
            "worker_not_found",
            "worker_busy",
            "queue_full",
            "worker_stopped",
            "idempotency_conflict",
            "store_corrupt",
            "runtime_unavailable",
            "operation_timeout",
        ),
        description=(
            "Answers once the input is durable, before the run does anything. A repeated `input_id` returns the "
            "first ack with `duplicate: true` (whatever its `on_busy`). A busy Worker answers 409 `worker_busy` "
            'naming the active run in `details.run_id`, with `Retry-After: 1` (`on_busy: "reject"`, the '
            'default). With `on_busy: "enqueue"` the input is queued behind the active run (`queued: true`, '
            "`input_sequence: null`; queued runs start in order, each logging `run_started`), at most `max_queue` "
            "({max_queue}) of them: one more is 409 `queue_full` with `Retry-After: 1`. With `on_busy: "
            '"interrupt"` the active run is cancelled (reason `interrupted_by_input`) and the answer comes once '
            "this input's run has started in its place (504 `operation_timeout` when the run has not ended within "
            "`operation_timeout_s`)."
        ),
    ),
    Endpoint(
        "GET",
        "/v1/workers/{worker_id}",
        get_worker,
        "getWorker",
        "A Worker in full",
        200,
        WorkerEnvelope,
        errors=("invalid_worker_id", "worker_not_found", "store_corrupt", "runtime_unavailable"),
    ),
    Endpoint(
        "GET",
        "/v1/events",
        read_events,
        "readEvents",
        "Events of the runtime-wide log, optionally long-polled",
        200,
        EventPage,
        query=(
            QueryParam("after", _COUNT_SCHEMA, "Return events with an id above this (default 0)."),
            _LIMIT,
            _WORKER_ID_QUERY,
            QueryParam(
                "wait",
                {"type": "number", "minimum": 0},
                "Seconds to wait when nothing matches (0 to `max_wait_s`, {max_wait_s}): the answer comes as soon as "
                "one event matches, else after `wait` with an empty page.",
                maximum="max_wait_s",
            ),
        ),
        errors=("invalid_request", "limit_too_large", "cursor_expired", "runtime_unavailable"),
    ),
    Endpoint(
        "GET",
        "/v1/events/stream",
        stream_events,
        "streamEvents",
        "The event log as Server-Sent Events: one frame per durable event, resumable with Last-Event-ID",
        200,
        StreamEvent,
        media_type="text/event-stream",
        query=(
            QueryParam(
                "after",
                _COUNT_SCHEMA,
                "Start with the first event above this id (`Last-Event-ID` wins when both are given). With neither, "
                "the stream is live only: events logged after it opened; `after=0` replays what is kept.",
            ),
            QueryParam("worker_id", ID_SCHEMA, "Only events naming this Worker (a deleted Worker's events too)."),
            QueryParam("run_id", ID_SCHEMA, "Only the events of this run; needs `worker_id` (422 without it)."),
            QueryParam(
                "deltas",
                {"type": "boolean"},
                "`true`: also `output_delta` frames (no `id:` line): the text of entries in progress, a snapshot "
                "of each first when the stream reaches the live tail.",
            ),
        ),
        headers=(
            QueryParam(
                "Last-Event-ID",
                _COUNT_SCHEMA,
                "The id of the last frame received: the stream starts with the first event above it.",
            ),
        ),
        errors=("invalid_request", "cursor_expired", "runtime_unavailable"),
        description=(
            "Each durable event is one frame: `id:` the event id, `event:` its kind, `data:` the event as JSON "
            "with `entry`, the transcript entry of `input_accepted`, `run_started` and `transcript_appended` (null "
            "on other kinds, and on a queued input's `input_accepted`). `x-sse-events` names the payload schema of "
            "each event name. A comment `: keep-alive` "
            "comes after `stream_heartbeat_s` ({stream_heartbeat_s} s) of silence. At shutdown every stream "
            "sends the `runtime_stopping` frame and ends (without an `id:` line if it could not be logged). "
            "Every error comes as JSON before the first frame: 410 `cursor_expired` for a cursor older than "
            "the events kept, 422 `invalid_request` for a malformed parameter or `Last-Event-ID` and for a "
            "cursor above the newest id (`details.newest_id`), 503 `runtime_unavailable` past `max_streams` "
            "({max_streams}) open streams or while the Runtime stops."
        ),
    ),
    Endpoint(
        "GET",
        "/v1/workers/{worker_id}/transcript",
        read_transcript,
        "readTranscript",
        "A page of a Worker's transcript",
        200,
        TranscriptEnvelope,
        query=(
            QueryParam("start", _COUNT_SCHEMA, "First sequence (default 0)."),
            _LIMIT,
            QueryParam(
                "run_id",
                ID_SCHEMA,
                "Only this run's entries (its input's, then its outputs): `start` stays a sequence, `total_items` "
                "counts the run's entries and `next_start` is the sequence after the last one returned while more "
                "remain.",
            ),
        ),
        errors=(
            "invalid_worker_id",
            "invalid_request",
            "limit_too_large",
            "worker_not_found",
            "run_not_found",
            "store_corrupt",
            "runtime_unavailable",
        ),
    ),
    Endpoint(
        "GET",
        "/v1/workers/{worker_id}/runs/{run_id}",
        get_run,
        "getRun",
        "Any run of a Worker, finished or not",
        200,
        RunEnvelope,
        errors=("invalid_worker_id", "worker_not_found", "run_not_found", "store_corrupt", "runtime_unavailable"),
    ),
    Endpoint(
        "POST",
        "/v1/workers/{worker_id}/runs/{run_id}/respond",
        respond,
        "respond",
        "Answer a waiting run's request for input (its `pending_request`)",
        200,
        RespondAckEnvelope,
        request=RespondRequest,
        request_required=True,
        errors=(
            "invalid_worker_id",
            "invalid_request",
            "worker_not_found",
            "run_not_found",
            "request_not_found",
            "request_closed",
            "idempotency_conflict",
            "store_corrupt",
            "runtime_unavailable",
        ),
        description=(
            "Answers once the `input_responded` event is durable; the run is `running` again. An `approval` needs "
            "`approved` (`content` is an optional comment), a `question` needs `content` and takes no `approved` "
            "(else 422 `invalid_request`). A request this run never issued is 404 `request_not_found`; a closed "
            "one (answered, timed out, or ended with its run: `details.outcome`) 409 `request_closed`, except "
            "that the `response_id` of the answer that closed it gets that first ack again with `duplicate: "
            "true`, and the same `response_id` with another answer is 409 `idempotency_conflict`."
        ),
    ),
    Endpoint(
        "GET",
        "/v1/requests",
        list_requests,
        "listRequests",
        "The open requests for input of this Runtime's runs, in the order they opened",
        200,
        RequestsPage,
        query=(
            QueryParam(
                "after",
                _COUNT_SCHEMA,
                "Return requests opened by an event with an id above this (default 0; the previous page's "
                "`next_after`).",
            ),
            _LIMIT,
        ),
        errors=("invalid_request", "limit_too_large", "runtime_unavailable"),
        description=(
            "Ordered by the id of the `input_requested` event that opened each; `next_after` is null on the last "
            "page. An approvals inbox starts here, then follows `input_requested` and `input_responded` on the "
            "event stream. A request past `expires_at` is answered `timed_out` (`[limits] request_timeout_s`, "
            "{request_timeout_s} s, unless the engine gave its own)."
        ),
    ),
    Endpoint(
        "POST",
        "/v1/workers/{worker_id}/cancel",
        cancel_worker,
        "cancelWorker",
        "Cancel the active run (only `run_id`, when given, which may name a queued run); answers once it has ended",
        200,
        WorkerAckEnvelope,
        request=CancelRequest,
        errors=(
            "invalid_worker_id",
            "invalid_request",
            "worker_not_found",
            "store_corrupt",
            "runtime_unavailable",
            "operation_timeout",
        ),
        description="With no active run (or another one named) nothing changes: `cancelled_run_id` and `event_id` "
        "are null. A `run_id` naming a queued run ends only that run (`cancelled`, never started). `status` is the "
        "Worker's after the call (`busy` when a queued run started in place of the cancelled one).",
    ),
    Endpoint(
        "POST",
        "/v1/workers/{worker_id}/stop",
        stop_worker,
        "stopWorker",
        "Stop a Worker for good, cancelling its active run and every queued one; idempotent",
        200,
        WorkerAckEnvelope,
        request=StopRequest,
        errors=(
            "invalid_worker_id",
            "invalid_request",
            "worker_not_found",
            "store_corrupt",
            "runtime_unavailable",
            "operation_timeout",
        ),
    ),
    Endpoint(
        "DELETE",
        "/v1/workers/{worker_id}",
        delete_worker,
        "deleteWorker",
        "Delete a stopped Worker with its transcript and state (its events stay)",
        200,
        WorkerAckEnvelope,
        errors=("invalid_worker_id", "worker_not_found", "worker_not_stopped", "store_corrupt", "runtime_unavailable"),
    ),
    Endpoint(
        "GET",
        "/v1/workers",
        list_workers,
        "listWorkers",
        "Workers ordered by worker id",
        200,
        WorkersPage,
        query=(
            QueryParam("status", {"enum": ["idle", "busy", "stopped"]}, "Only Workers with this status."),
            _LIMIT,
            QueryParam(
                "after",
                ID_SCHEMA,
                "Return Workers whose id sorts after this one (the previous page's `next_after`).",
            ),
        ),
        errors=("invalid_request", "limit_too_large", "runtime_unavailable"),
    ),
    Endpoint(
        "POST",
        "/v1/workers",
        create_worker,
        "createWorker",
        "Create a Worker",
        201,
        WorkerEnvelope,
        request=CreateWorkerRequest,
        errors=(
            "invalid_request",
            "unknown_profile",
            "unsupported_capability",
            "worker_exists",
            "capacity_exceeded",
            "runtime_unavailable",
        ),
        description="An empty body creates a Worker with a generated id, intent `assistant` and the default profile.",
    ),
    Endpoint(
        "GET",
        "/v1/runtime",
        get_runtime,
        "getRuntime",
        "What this Runtime says about itself",
        200,
        RuntimeEnvelope,
        errors=("runtime_unavailable",),
    ),
    Endpoint(
        "GET",
        "/v1/diagnostics",
        get_diagnostics,
        "getDiagnostics",
        "Store repairs, corrupt records and failed runs since this process started (the newest 1000)",
        200,
        DiagnosticsEnvelope,
        errors=("runtime_unavailable",),
        description="Diagnostics are kept in memory, per process: after a restart the list starts again with what "
        "the store's recovery found at that start. Failed runs stay in the event log (`run_failed` events).",
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        "getOpenApi",
        "This OpenAPI document",
        200,
        dict[str, Any],
    ),
    Endpoint(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "Liveness: ok while the process serves (no token needed, nothing revealed)",
        200,
        HealthStatus,
        public=True,
    ),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        "Readiness: ok while the Runtime accepts input, 503 `stopping` while it stops or recovers",
        200,
        HealthStatus,
        public=True,
        alternatives={503: HealthStatus},
    ),
)

#: Paths that need no token.
PUBLIC_PATHS = frozenset(e.path for e in ENDPOINTS if e.public)

#: The error envelope, for the OpenAPI document.
ERROR_TYPE = ErrorEnvelope
