"""Reading a request without Request objects: query parameters, the JSON body with its media type and size."""

from __future__ import annotations

import re
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from starlette.types import Receive, Scope

from worker_runtime_core import (
    InvalidJsonError,
    InvalidRequestError,
    InvalidWorkerIdError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    is_valid_id,
)
from worker_runtime_core.ids import invalid_id_message

__all__ = [
    "QUERY_INT_MAX",
    "ClientGone",
    "is_json_media_type",
    "parse_query",
    "query_float",
    "query_int",
    "read_body",
    "worker_id",
]

#: The largest integer a query parameter may hold (a signed 64-bit integer; the document says so).
QUERY_INT_MAX = 2**63 - 1

T = TypeVar("T")

_PATH_RE = re.compile(r" - at `(\$[^`]*)`$")
_NAMED_FIELD_RE = re.compile(r"Object (?:missing required|contains unknown) field `([^`]*)`")
_LAST_KEY_RE = re.compile(r"(?:^|\.)([A-Za-z0-9_]+)$")
_INT_RE = re.compile(r"([+-]?[0-9]{1,30})(?:\.0{1,30})?")  # `10.0` is an integer to JSON Schema, so here too
#: A non-negative decimal, with an exponent as a number's shortest form may have (``1e-05``, ``2.5e+20``).
_FLOAT_RE = re.compile(r"[+]?[0-9]{1,30}(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?")


class ClientGone(Exception):
    """The client disconnected before the request was read or answered; nobody is left to answer."""


def worker_id(params: dict[str, Any]) -> str:
    """The ``{worker_id}`` of a path, checked against the id pattern (400 `invalid_worker_id`)."""
    value = params["worker_id"]
    if not is_valid_id(value):
        raise InvalidWorkerIdError(invalid_id_message("worker_id"), details={"worker_id": str(value)[:200]})
    return str(value)


def parse_query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and only those in `allowed`; an empty value means absent.

    Raises:
        InvalidRequestError: an unknown or repeated parameter.
    """
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    found: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequestError(
                f"unknown query parameter {name[:100]!r} (known: {known})", details={"field": name[:100]}
            )
        if name in found:
            raise InvalidRequestError(f"query parameter {name!r} is given twice", details={"field": name})
        if value != "":
            found[name] = value
    return found


def query_int(query: dict[str, str], name: str) -> int | None:
    """An integer query parameter (``10`` or ``10.0``), or None when absent (422 `invalid_request` when not an
    integer of at most 64 bits)."""
    value = query.get(name)
    if value is None:
        return None
    match = _INT_RE.fullmatch(value)
    if match is None:
        raise InvalidRequestError(f"{name} must be an integer, not {value[:100]!r}", details={"field": name})
    number = int(match.group(1))
    if not -QUERY_INT_MAX - 1 <= number <= QUERY_INT_MAX:
        raise InvalidRequestError(f"{name} is out of range: {value[:100]!r}", details={"field": name})
    return number


def query_float(query: dict[str, str], name: str) -> float | None:
    """A non-negative number query parameter, or None when absent (422 `invalid_request` otherwise)."""
    value = query.get(name)
    if value is None:
        return None
    if _FLOAT_RE.fullmatch(value) is None:
        raise InvalidRequestError(f"{name} must be a number of seconds, not {value[:100]!r}", details={"field": name})
    return float(value)


def is_json_media_type(value: bytes) -> bool:
    """True for ``application/json`` with no charset or ``charset=utf-8`` (other parameters are ignored)."""
    if value == b"application/json":
        return True
    main, _, params = value.partition(b";")
    if main.strip().lower() != b"application/json":
        return False
    for param in params.split(b";"):
        name, _, arg = param.partition(b"=")
        if name.strip().lower() == b"charset" and arg.strip().strip(b'"').lower() not in (b"utf-8", b"utf8"):
            return False
    return True


def _unsupported(content_type: bytes | None) -> UnsupportedMediaTypeError:
    shown = content_type.decode("latin-1")[:100] if content_type is not None else None
    return UnsupportedMediaTypeError(
        f"a request body must be application/json, not {shown or 'untyped'}", details={"content_type": shown}
    )


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than max_body_bytes ({limit})", details={"max_body_bytes": limit}
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most `limit` bytes; an empty body is ``{}`` and needs no Content-Type.

    The media type is checked before the size, and a body over `limit` is refused from its Content-Length or,
    without one, as soon as the bytes read pass the limit; the rest is never read.

    Raises:
        UnsupportedMediaTypeError: a non-empty body that is not ``application/json`` (UTF-8).
        PayloadTooLargeError: a body over `limit` bytes.
        ClientGone: the client disconnected.
    """
    content_type: bytes | None = None
    length: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
    typed = content_type is not None and is_json_media_type(content_type)
    if length is not None and length.strip().isdigit():
        declared = int(length)
        if declared > 0 and not typed:
            raise _unsupported(content_type)
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            if not typed:
                raise _unsupported(content_type)
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if not chunks:
        return b"{}"
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_body(data: bytes, decoder: msgspec.json.Decoder[T], invalid: type[InvalidRequestError]) -> T:
    """Decode a body with `decoder`.

    Raises:
        InvalidJsonError: not JSON (400).
        InvalidRequestError: JSON of the wrong shape, as `invalid` (422), with the failing path in the message
            and in ``details["path"]``, and the field in ``details["field"]`` (``config_bundle.id``); an id that
            breaks the id pattern says so in words, as a bad id in a path or query does.
    """
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message, details = _explain(str(exc))
        raise invalid(message, details=details) from None
    except msgspec.DecodeError as exc:
        raise InvalidJsonError(f"the request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for a string that is not UTF-8
        raise InvalidJsonError(f"the request body is not valid UTF-8 JSON: {exc.reason} at byte {exc.start}") from None


def _explain(text: str) -> tuple[str, dict[str, str]]:
    """The message and details of msgspec's `ValidationError` text for a request body."""
    match = _PATH_RE.search(text)
    path = match.group(1) if match else "$"
    problem = text[: match.start()] if match else text
    details = {"path": path}
    named = _NAMED_FIELD_RE.match(problem)
    if path.startswith("$."):
        details["field"] = path[2:]
    elif named is not None and path == "$":
        details["field"] = named.group(1)
    field = details.get("field")
    if field is not None and _is_id_problem(problem, field):
        return invalid_id_message(field), details
    return f"invalid request body: {text}", details


def _is_id_problem(problem: str, field: str) -> bool:
    """A pattern failure (only ids have one in a body), or a length failure of a field named ``id``/``*_id``."""
    if problem.startswith("Expected `str` matching regex"):
        return True
    if not problem.startswith("Expected `str` of length"):
        return False
    key = _LAST_KEY_RE.search(field)
    return key is not None and (key.group(1) == "id" or key.group(1).endswith("_id"))
