"""Logging of the process: text lines or one JSON object per line, on stderr, through Python logging."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

__all__ = ["JsonFormatter", "configure_logging"]

#: `extra` fields the access log and the error log attach; the JSON format writes them as keys.
_EXTRA_KEYS = ("request_id", "method", "path", "status", "duration_ms", "client")
_TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, the access-log
    fields when present, and ``exc_info`` (the traceback) when the record has one."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        data: dict[str, Any] = {
            "time": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        try:
            return self._encoder.encode(data).decode()
        except (TypeError, ValueError):  # an extra that does not encode: keep the line
            data = {k: v if isinstance(v, str | int | float | bool) else repr(v) for k, v in data.items()}
            return self._encoder.encode(data).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Send every logger (uvicorn's included) to stderr at `level`, as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(_TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
        # uvicorn's start and stop lines repeat ours; its warnings and errors stay (all of it at debug).
        uv.setLevel(logging.DEBUG if level.lower() == "debug" else max(logging.WARNING, root.level))
