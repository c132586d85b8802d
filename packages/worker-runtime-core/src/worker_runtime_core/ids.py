"""Identifiers: `RuntimeId`, `WorkerId` and friends.

An id is 1 to 128 characters from ``[A-Za-z0-9._-]``, starting with a letter or digit. Ids become path parts in
stores, so every id is checked with `re.fullmatch` (never `re.match` with ``$``, which also accepts a trailing
newline) before anything else sees it.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

import msgspec

__all__ = [
    "ID_PATTERN",
    "ID_RULE",
    "IdStr",
    "InputId",
    "RunId",
    "RuntimeId",
    "WorkerId",
    "generate_id",
    "invalid_id_message",
    "is_valid_id",
]

#: The pattern every runtime, worker and input id matches in full. ``(?!\n)`` keeps JSON-schema validators, whose
#: ``$`` may match before a final newline, as strict as `re.fullmatch`.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$(?!\n)"

#: `ID_PATTERN` in words, for error messages.
ID_RULE = "1 to 128 characters: letters, digits, '.', '_', '-', starting with a letter or digit"

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: A string that is a valid id; msgspec checks the pattern when it decodes one.
IdStr = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=128)]
RuntimeId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=128, title="RuntimeId")]
WorkerId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=128, title="WorkerId")]
InputId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=128, title="InputId")]
#: Run ids are made by the Runtime; callers only hand them back.
RunId = Annotated[str, msgspec.Meta(min_length=1, title="RunId")]


def is_valid_id(value: object) -> bool:
    """Return True when `value` is a str that matches `ID_PATTERN` in full."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def invalid_id_message(field: str) -> str:
    """The one message for an id that breaks `ID_PATTERN`, wherever it was given: ``worker_id: invalid id (...)``."""
    return f"{field}: invalid id ({ID_RULE})"


def generate_id(prefix: str) -> str:
    """Return a fresh random id such as ``w-3f2a9c0d1e4b5a67`` (64 random bits)."""
    return f"{prefix}-{secrets.token_hex(8)}"
