"""Time helpers: times are floats (seconds since the epoch) inside, RFC 3339 strings in UTC on the wire."""

from __future__ import annotations

import time

__all__ = ["format_time", "now"]

now = time.time

_cached_second = -1
_cached_prefix = ""


def format_time(ts: float) -> str:
    """Format epoch seconds as RFC 3339 in UTC with microseconds, e.g. ``2026-11-24T16:20:00.123456Z``.

    The date-and-second prefix is cached for the last second seen: formatting is on every read path.
    """
    global _cached_second, _cached_prefix
    micros = round(ts * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    if second != _cached_second:
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _cached_second = second
    return f"{_cached_prefix}.{fraction:06d}Z"
