"""The client's retry rules (docs/python-api.md, "Retries"), in one place.

* A connection that was never made (connect error or connect timeout) is retried for every call: nothing was sent.
* 503 ``runtime_unavailable`` is retried for every call: the server changed nothing.
* An answer that never came (read error, read timeout), 504 ``operation_timeout`` and a 502 without an error
  envelope leave the outcome unknown: retried only for calls that are safe to repeat (`Safety.REPEATABLE`):
  reads, `send_input` (it always carries an `input_id`), `create_worker` (it always names the worker id), `stop`
  and a `cancel` that names its run.
* 409 ``worker_busy`` and 409 ``queue_full`` are never retried; they are raised with `.retry_after`.
"""

from __future__ import annotations

import enum

import httpx

__all__ = ["Safety", "retry_after_seconds", "should_retry_response", "should_retry_transport"]


class Safety(enum.Enum):
    """How safe a call is to send again when its first outcome is unknown."""

    REPEATABLE = "repeatable"  # repeating it cannot do anything twice
    ONCE = "once"  # retried only when the server certainly did nothing


def should_retry_transport(exc: httpx.TransportError, safety: Safety) -> bool:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return safety is Safety.REPEATABLE


def should_retry_response(status: int, code: str | None, safety: Safety) -> bool:
    if status == 503:
        return True
    if status == 504 or (status == 502 and code is None):
        return safety is Safety.REPEATABLE
    return False


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
