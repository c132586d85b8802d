"""Time helpers: times are floats (seconds since the epoch) inside, RFC 3339 strings in UTC on the wire."""

from __future__ import annotations

import time

__all__ = ["format_time", "now"]

now = time.time

_cached_second = -1
_cached_prefix = ""
#: Recently formatted times: a Worker's few timestamps are read far more often than they change. Cleared when full,
#: so it never holds more than `_MEMO_SIZE` strings (about 100 bytes each).
_memo: dict[float, str] = {}
_MEMO_SIZE = 4096


def format_time(ts: float) -> str:
    """Format epoch seconds as RFC 3339 in UTC with microseconds, e.g. ``2026-11-24T16:20:00.123456Z``.

    Formatting is on every read path: recent results are remembered, and the date-and-second prefix is cached for
    the last second seen.
    """
    text = _memo.get(ts)
    if text is not None:
        return text
    global _cached_second, _cached_prefix
    micros = round(ts * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    if second != _cached_second:
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _cached_second = second
    text = f"{_cached_prefix}.{fraction:06d}Z"
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[ts] = text
    return text
