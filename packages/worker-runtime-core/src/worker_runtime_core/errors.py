"""Typed errors, one class per wire error code.

Every error the Runtime raises is a `WorkerRuntimeError`; its `code` is the wire string and `retryable` says
whether the same call can succeed later. Only the HTTP package knows status codes. The tree::

    WorkerRuntimeError
    ├── InvalidRequestError           invalid_request
    │   ├── InvalidInputError         invalid_input
    │   ├── InvalidJsonError          invalid_json
    │   ├── InvalidWorkerIdError      invalid_worker_id
    │   ├── LimitTooLargeError        limit_too_large
    │   ├── UnknownProfileError       unknown_profile
    │   └── UnsupportedCapabilityError unsupported_capability
    ├── NotFoundError                 not_found
    │   ├── WorkerNotFoundError       worker_not_found
    │   ├── RunNotFoundError          run_not_found
    │   └── RequestNotFoundError      request_not_found
    ├── ConflictError                 (abstract)
    │   ├── WorkerExistsError         worker_exists
    │   ├── CapacityExceededError     capacity_exceeded
    │   ├── WorkerBusyError           worker_busy (retryable)
    │   ├── QueueFullError            queue_full (retryable)
    │   ├── WorkerStoppedError        worker_stopped
    │   ├── WorkerNotStoppedError     worker_not_stopped
    │   ├── IdempotencyConflictError  idempotency_conflict
    │   └── RequestClosedError        request_closed
    ├── CursorExpiredError            cursor_expired
    ├── UnauthorizedError             unauthorized
    ├── ForbiddenOriginError          forbidden_origin
    ├── ForbiddenHostError            forbidden_host
    ├── MethodNotAllowedError         method_not_allowed
    ├── PayloadTooLargeError          payload_too_large
    ├── UnsupportedMediaTypeError     unsupported_media_type
    ├── RuntimeUnavailableError       runtime_unavailable (retryable)
    ├── OperationTimeoutError         operation_timeout (retryable; also a TimeoutError)
    ├── StoreCorruptError             store_corrupt
    ├── InternalError                 internal_error
    │   ├── IllegalTransitionError    internal_error (a bug: a state change the lifecycle tables lack)
    │   └── EntryInProgressError      internal_error (an engine's bug: a second entry while one is open)
    └── ConfigError                   invalid_config (a bad profile or setting; never sent by a server)

`EngineError` is what an engine raises to fail a run with its own code; it ends the run ``failed`` and never
reaches the caller of `send_input`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "IllegalTransitionError",
    "CapacityExceededError",
    "ConfigError",
    "ConflictError",
    "CursorExpiredError",
    "EngineError",
    "EntryInProgressError",
    "ForbiddenHostError",
    "ForbiddenOriginError",
    "IdempotencyConflictError",
    "InternalError",
    "InvalidInputError",
    "InvalidJsonError",
    "QueueFullError",
    "InvalidRequestError",
    "InvalidWorkerIdError",
    "LimitTooLargeError",
    "MethodNotAllowedError",
    "NotFoundError",
    "OperationTimeoutError",
    "PayloadTooLargeError",
    "RequestClosedError",
    "RequestNotFoundError",
    "RunNotFoundError",
    "RuntimeUnavailableError",
    "StoreCorruptError",
    "UnauthorizedError",
    "UnknownProfileError",
    "UnsupportedCapabilityError",
    "UnsupportedMediaTypeError",
    "WorkerBusyError",
    "WorkerExistsError",
    "WorkerNotFoundError",
    "WorkerNotStoppedError",
    "WorkerRuntimeError",
    "WorkerStoppedError",
    "error_class_for_code",
    "error_from_wire",
]


class WorkerRuntimeError(Exception):
    """Base of every error the Runtime, the server and the client raise.

    Attributes:
        code: the wire error code (``worker_busy``, ...).
        message: a human-readable sentence.
        details: wire ``details`` object (for example ``{"run_id": ...}`` for `WorkerBusyError`).
        retryable: whether the same call may succeed later.
        status: the HTTP status when the error came over HTTP (set by the client), else None.
    """

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None, status: int | None = None) -> None:
        self.message = message or self.code.replace("_", " ")
        self.details: dict[str, Any] = details if details is not None else {}
        self.status = status
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"


class _UnknownCodeError(WorkerRuntimeError):
    """An error whose wire code this version does not know; keeps the code and the `retryable` it was sent."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        retryable: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(message, details=details, **kw)
        self.code = code  # type: ignore[misc]  # instance attributes shadow the ClassVars on purpose
        self.retryable = retryable  # type: ignore[misc]


class InvalidRequestError(WorkerRuntimeError):
    """A request or argument is malformed or out of range; nothing changed."""

    code = "invalid_request"


class InvalidInputError(InvalidRequestError):
    """An input body is invalid: bad kind, empty or oversized content, bad `input_id`."""

    code = "invalid_input"


class InvalidJsonError(InvalidRequestError):
    """A request body is not valid JSON."""

    code = "invalid_json"


class InvalidWorkerIdError(InvalidRequestError):
    """A worker id in a path or argument does not match the id pattern."""

    code = "invalid_worker_id"


class LimitTooLargeError(InvalidRequestError):
    """A page `limit` is above the configured `max_page`."""

    code = "limit_too_large"


class UnknownProfileError(InvalidRequestError):
    """A profile selector names no configured profile."""

    code = "unknown_profile"


class UnsupportedCapabilityError(InvalidRequestError):
    """A requested capability is not offered by the profile's engine."""

    code = "unsupported_capability"


class NotFoundError(WorkerRuntimeError):
    """The thing named does not exist (over HTTP: an unknown route)."""

    code = "not_found"


class WorkerNotFoundError(NotFoundError):
    """No Worker with this id exists in this Runtime."""

    code = "worker_not_found"


class RunNotFoundError(NotFoundError):
    """The Worker has no run with this id."""

    code = "run_not_found"


class RequestNotFoundError(NotFoundError):
    """An answer named a request its run never issued (or the run never asked)."""

    code = "request_not_found"


class ConflictError(WorkerRuntimeError):
    """The request conflicts with the current state of a Worker or the Runtime."""

    code = "conflict"


class WorkerExistsError(ConflictError):
    """A Worker with the requested id already exists."""

    code = "worker_exists"


class CapacityExceededError(ConflictError):
    """The Runtime already holds `max_workers` Workers (stopped ones count until deleted)."""

    code = "capacity_exceeded"


class WorkerBusyError(ConflictError):
    """Input reached a Worker whose run is still active; `details["run_id"]` names it."""

    code = "worker_busy"
    retryable = True
    #: Seconds the server asked to wait (its ``Retry-After`` header), set by the client.
    retry_after: float | None = None

    @property
    def run_id(self) -> str | None:
        """The active run that made the Worker busy."""
        value = self.details.get("run_id")
        return value if isinstance(value, str) else None


class QueueFullError(ConflictError):
    """Input with ``on_busy="enqueue"`` reached a Worker that already has `max_queue` runs queued behind its active
    run; `details` has ``max_queue``. Nothing changed; a retry can succeed once a queued run has started."""

    code = "queue_full"
    retryable = True
    #: Seconds the server asked to wait (its ``Retry-After`` header), set by the client.
    retry_after: float | None = None


class WorkerStoppedError(ConflictError):
    """Input reached a stopped Worker; it takes no more input."""

    code = "worker_stopped"


class WorkerNotStoppedError(ConflictError):
    """Only a stopped Worker can be deleted."""

    code = "worker_not_stopped"


class IdempotencyConflictError(ConflictError):
    """An `input_id` was reused with different content or kind."""

    code = "idempotency_conflict"


class RequestClosedError(ConflictError):
    """An answer reached a request that is closed: answered, timed out, or ended with its run
    (`details["outcome"]` says which)."""

    code = "request_closed"


class CursorExpiredError(WorkerRuntimeError):
    """An events cursor points before the oldest kept event; `details["oldest_id"]` is where to resume."""

    code = "cursor_expired"


class UnauthorizedError(WorkerRuntimeError):
    """The bearer token is missing or wrong."""

    code = "unauthorized"


class ForbiddenOriginError(WorkerRuntimeError):
    """A request carried a browser `Origin` header; browsers never talk to a Runtime."""

    code = "forbidden_origin"


class ForbiddenHostError(WorkerRuntimeError):
    """The `Host` header is outside the allow list (DNS rebinding guard)."""

    code = "forbidden_host"


class MethodNotAllowedError(WorkerRuntimeError):
    """The route exists but not with this HTTP method."""

    code = "method_not_allowed"


class PayloadTooLargeError(WorkerRuntimeError):
    """The request body is larger than `max_body_bytes`."""

    code = "payload_too_large"


class UnsupportedMediaTypeError(WorkerRuntimeError):
    """A request body is not `application/json`."""

    code = "unsupported_media_type"


class RuntimeUnavailableError(WorkerRuntimeError):
    """The Runtime is stopping, not started, or its store cannot write; retry later or elsewhere."""

    code = "runtime_unavailable"
    retryable = True


class OperationTimeoutError(WorkerRuntimeError, TimeoutError):
    """An operation did not finish in time; it completes fully later or not at all."""

    code = "operation_timeout"
    retryable = True


class StoreCorruptError(WorkerRuntimeError):
    """A record or log of this Worker is corrupt; `details` has `path` and `offset`."""

    code = "store_corrupt"


class InternalError(WorkerRuntimeError):
    """An unexpected failure; the server logged the traceback."""

    code = "internal_error"


class IllegalTransitionError(InternalError):
    """A state change the lifecycle tables do not allow: a bug in the Runtime, never a caller's mistake."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(
            f"{machine} in state {state!r} has no transition for {event!r}",
            details={"machine": machine, "state": state, "event": event},
        )
        self.machine = machine
        self.state = state
        self.event = event


class EntryInProgressError(InternalError):
    """An engine began an entry, or emitted one, while another entry of its run is in progress (a run has at most
    one); an engine that lets it escape fails its run. `details` names the run and the open entry's sequence."""


class ConfigError(WorkerRuntimeError):
    """A Runtime setting or profile is invalid; raised when the Runtime is built or started."""

    code = "invalid_config"


class EngineError(Exception):
    """Raised by an engine to end its run ``failed`` with `code` and `message` recorded on the run."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def _concrete_errors() -> dict[str, type[WorkerRuntimeError]]:
    found: dict[str, type[WorkerRuntimeError]] = {}
    pending: list[type[WorkerRuntimeError]] = [WorkerRuntimeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls not in (WorkerRuntimeError, _UnknownCodeError, ConflictError):
            found.setdefault(cls.code, cls)
    return found


_BY_CODE = _concrete_errors()


def error_class_for_code(code: str) -> type[WorkerRuntimeError] | None:
    """Return the error class for a wire code, or None for a code this version does not know."""
    return _BY_CODE.get(code)


def error_from_wire(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    status: int | None = None,
    retryable: bool = False,
) -> WorkerRuntimeError:
    """Build the typed error for a wire error body.

    A code this version knows gives its class (whose `retryable` is the contract's); an unknown code (one a newer
    server added) gives a subclass of the base class with `.code` and the body's `retryable` kept.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return _UnknownCodeError(code, message, details=details, status=status, retryable=retryable)
    return cls(message, details=details, status=status)
