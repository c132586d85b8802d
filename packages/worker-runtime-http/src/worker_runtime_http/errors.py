"""The one table from error classes to HTTP statuses, the error envelope writer, and the last-resort catch.

Only this module knows status codes. The Runtime raises core's typed errors (`worker_runtime_core.errors`); the
HTTP layer raises the same classes for what only HTTP can get wrong (a bad Host, an ``Origin``, a missing token,
an unknown route, a body of the wrong type or size). `error_reply` turns any of them into a status, the
``{"error": {...}}`` envelope and its headers; `internal_error_reply` does it for everything else, logging the
traceback and sending none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec

from worker_runtime_core import (
    CapacityExceededError,
    ConfigError,
    ConflictError,
    CursorExpiredError,
    EntryInProgressError,
    ErrorBody,
    ErrorEnvelope,
    ForbiddenHostError,
    ForbiddenOriginError,
    IdempotencyConflictError,
    IllegalTransitionError,
    InternalError,
    InvalidInputError,
    InvalidJsonError,
    InvalidRequestError,
    InvalidWorkerIdError,
    LimitTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
    OperationTimeoutError,
    PayloadTooLargeError,
    QueueFullError,
    RequestClosedError,
    RequestNotFoundError,
    RunNotFoundError,
    RuntimeUnavailableError,
    StoreCorruptError,
    UnauthorizedError,
    UnknownProfileError,
    UnsupportedCapabilityError,
    UnsupportedMediaTypeError,
    WorkerBusyError,
    WorkerExistsError,
    WorkerNotFoundError,
    WorkerNotStoppedError,
    WorkerRuntimeError,
    WorkerStoppedError,
)

__all__ = ["STATUS_BY_ERROR", "Headers", "error_reply", "internal_error_reply", "status_for"]

logger = logging.getLogger("worker_runtime_http")

Headers = list[tuple[bytes, bytes]]

#: Every error class of core and its HTTP status. A subclass that is not listed gets the status of its nearest
#: listed base (walking the MRO), so a store's own `ConfigError` subclass is still a 500.
STATUS_BY_ERROR: Mapping[type[WorkerRuntimeError], int] = {
    InvalidJsonError: 400,
    InvalidWorkerIdError: 400,
    UnauthorizedError: 401,
    ForbiddenOriginError: 403,
    ForbiddenHostError: 403,
    NotFoundError: 404,
    WorkerNotFoundError: 404,
    RunNotFoundError: 404,
    RequestNotFoundError: 404,
    MethodNotAllowedError: 405,
    ConflictError: 409,
    WorkerExistsError: 409,
    CapacityExceededError: 409,
    WorkerBusyError: 409,
    QueueFullError: 409,
    WorkerStoppedError: 409,
    WorkerNotStoppedError: 409,
    IdempotencyConflictError: 409,
    RequestClosedError: 409,
    CursorExpiredError: 410,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    InvalidRequestError: 422,
    InvalidInputError: 422,
    LimitTooLargeError: 422,
    UnknownProfileError: 422,
    UnsupportedCapabilityError: 422,
    InternalError: 500,
    IllegalTransitionError: 500,
    EntryInProgressError: 500,  # an engine's bug; it fails a run, never a request
    StoreCorruptError: 500,
    ConfigError: 500,  # never sent as such: `error_reply` answers `internal_error` (see there)
    WorkerRuntimeError: 500,
    RuntimeUnavailableError: 503,
    OperationTimeoutError: 504,
}

_ENCODER = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
_RETRY_AFTER = (b"retry-after", b"1")
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="worker-runtime"')


def status_for(error: type[WorkerRuntimeError]) -> int:
    """The HTTP status of an error class: its own entry in `STATUS_BY_ERROR`, else its nearest listed base's."""
    for cls in error.__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def error_reply(exc: WorkerRuntimeError) -> tuple[int, bytes, Headers]:
    """Status, envelope body and extra headers for a typed error.

    `worker_busy` and `queue_full` carry ``Retry-After: 1``, `unauthorized` a ``WWW-Authenticate: Bearer``
    challenge, and a `method_not_allowed` error whose ``details["allow"]`` lists the methods an ``Allow`` header. A
    `ConfigError`
    (a setting the server got wrong, never the caller's fault) is logged and answered as `internal_error`.
    """
    if isinstance(exc, ConfigError):
        logger.error("configuration error while serving a request: %s", exc.message)
        exc = InternalError("the server hit a configuration error; see its log")
    status = status_for(type(exc))
    headers: Headers = [_JSON]
    if isinstance(exc, WorkerBusyError | QueueFullError):
        headers.append(_RETRY_AFTER)
    elif isinstance(exc, UnauthorizedError):
        headers.append(_WWW_AUTHENTICATE)
    elif isinstance(exc, MethodNotAllowedError):
        allow = exc.details.get("allow")
        if isinstance(allow, list):
            headers.append((b"allow", ", ".join(str(m) for m in allow).encode("latin-1")))
    body = ErrorBody(code=exc.code, message=exc.message, details=exc.details, retryable=exc.retryable)
    try:
        encoded = _ENCODER.encode(ErrorEnvelope(error=body))
    except (TypeError, ValueError, OverflowError):  # details that do not encode: keep the code and the message
        logger.warning("error details of %s do not encode as JSON; sent without them", exc.code)
        body = ErrorBody(code=exc.code, message=exc.message, details={}, retryable=exc.retryable)
        encoded = _ENCODER.encode(ErrorEnvelope(error=body))
    return status, encoded, headers


def internal_error_reply(exc: BaseException, *, method: str, path: str, request_id: str) -> tuple[int, bytes, Headers]:
    """Log an unexpected exception with its traceback and answer 500 `internal_error` with no traceback."""
    logger.error(
        "unexpected %s while serving %s %s (request %s)",
        type(exc).__name__,
        method,
        path,
        request_id,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return error_reply(InternalError(f"internal error; the server logged it under request id {request_id}"))
