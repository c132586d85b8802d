"""Time helpers: times are floats (seconds since the epoch) inside, RFC 3339 strings in UTC on the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["format_time", "now"]

now = time.time


def format_time(ts: float) -> str:
    """Format epoch seconds as an RFC 3339 string in UTC with microseconds, e.g. ``2026-11-24T16:20:00.123456Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
