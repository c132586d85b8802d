"""Errors of the client beside the server's, which are core's classes raised with `.status` set.

::

    WorkerRuntimeError (core)
    ├── ... every wire code: WorkerBusyError (with .retry_after), WorkerNotFoundError, ...
    ├── TransportError                  the request did not get an answer (retryable)
    │   ├── RuntimeConnectionError      could not connect, or the connection broke
    │   └── RuntimeTimeoutError         no answer in time (also a TimeoutError)
    ├── InvalidRequestError (core)
    │   └── CursorAheadError            a stream's cursor is above the newest event id (`.newest_id`)
    ├── ProtocolError                   an answer that is not the contract's (non-JSON, not an envelope)
    ├── RuntimeMismatchError            the server is another runtime than the one asked for
    │   └── RuntimeChangedError         a stream's runtime id changed while it was open
    └── UnknownRuntimeError             a pool has no runtime with that id

Transport errors keep the httpx error as `__cause__`. No message or repr carries the token.
"""

from __future__ import annotations

from typing import Any

from worker_runtime_core import InvalidRequestError, WorkerRuntimeError

__all__ = [
    "CursorAheadError",
    "ProtocolError",
    "RuntimeChangedError",
    "RuntimeConnectionError",
    "RuntimeMismatchError",
    "RuntimeTimeoutError",
    "TransportError",
    "UnknownRuntimeError",
]


class TransportError(WorkerRuntimeError):
    """The request got no answer from the Runtime."""

    code = "transport_error"
    retryable = True


class RuntimeConnectionError(TransportError):
    """The client could not connect to the Runtime, or the connection broke."""

    code = "connection_error"


class RuntimeTimeoutError(TransportError, TimeoutError):
    """The Runtime did not answer in time."""

    code = "timeout"


class ProtocolError(WorkerRuntimeError):
    """The answer is not what the wire contract says (a non-JSON body, a missing envelope, a wrong shape)."""

    code = "protocol_error"


class RuntimeMismatchError(WorkerRuntimeError):
    """The server at this address is another runtime than the one the client was made for."""

    code = "runtime_mismatch"


class RuntimeChangedError(RuntimeMismatchError):
    """The runtime behind an event stream is not the one it was reading (`details`: ``expected``, ``actual``): its
    event ids are another log's, so the stream's cursor means nothing there."""

    code = "runtime_changed"


class CursorAheadError(InvalidRequestError):
    """A stream's cursor is above the newest event id the server ever served (a memory store restarted, or another
    store): `newest_id` is that id. The events after the cursor are gone; start again from a cursor you choose."""

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(message, details=details, status=status)
        newest = self.details.get("newest_id")
        self.newest_id: int | None = newest if isinstance(newest, int) and not isinstance(newest, bool) else None


class UnknownRuntimeError(WorkerRuntimeError):
    """A pool knows no runtime with this id."""

    code = "unknown_runtime"
