"""Checks of the Runtime's arguments that several methods share: worker ids, integers, page limits, create requests.

Each raises the typed error a caller is owed (`InvalidWorkerIdError`, `InvalidRequestError`, `LimitTooLargeError`)
before anything else sees the value.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from .config import Limits
from .errors import InvalidRequestError, InvalidWorkerIdError, LimitTooLargeError
from .ids import invalid_id_message, is_valid_id
from .wire import CreateWorkerRequest

__all__ = ["check_worker_id", "create_request", "input_digest", "is_int", "page_limit"]

_AT_FIELD_RE = re.compile(r" - at `\$\.([^`]*)`$")


def check_worker_id(worker_id: object) -> str:
    """`worker_id` itself when it is a valid id, else `InvalidWorkerIdError`."""
    if not is_valid_id(worker_id):
        raise InvalidWorkerIdError(invalid_id_message("worker_id"), details={"worker_id": str(worker_id)[:200]})
    return worker_id  # type: ignore[return-value]  # is_valid_id checked the type


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def input_digest(kind: str, content: str) -> bytes:
    """What an `input_id` remembers of its input: a repeat with another digest is an idempotency conflict."""
    return hashlib.blake2b(f"{kind}\0{content}".encode(), digest_size=16).digest()


def page_limit(limit: int | None, limits: Limits) -> int:
    """A page size: `default_page` when None, else checked against 1..`max_page`."""
    if limit is None:
        return limits.default_page
    if not is_int(limit) or limit < 1:
        raise InvalidRequestError(f"limit must be an integer >= 1, not {limit!r}", details={"field": "limit"})
    if limit > limits.max_page:
        raise LimitTooLargeError(
            f"limit {limit} is above max_page ({limits.max_page})", details={"max_page": limits.max_page}
        )
    return limit


def create_request(request: CreateWorkerRequest | None, fields: dict[str, Any]) -> CreateWorkerRequest:
    """A checked `CreateWorkerRequest` from a struct or keyword fields (not both)."""
    if request is not None and fields:
        raise TypeError("pass a CreateWorkerRequest or keyword fields, not both")
    source: Any = msgspec.to_builtins(request if request is not None else fields)
    try:
        return msgspec.convert(source, CreateWorkerRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_FIELD_RE.search(text)
        if at is None:
            raise InvalidRequestError(f"invalid create request: {text}") from None
        field = at.group(1)
        key = field.rpartition(".")[2]
        if text.startswith("Expected `str` matching regex") or (
            text.startswith("Expected `str` of length") and (key == "id" or key.endswith("_id"))
        ):
            raise InvalidRequestError(invalid_id_message(field), details={"field": field}) from None
        raise InvalidRequestError(f"invalid create request: {text}", details={"field": field}) from None
