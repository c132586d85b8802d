"""Runtime settings: `Limits` (the ``[limits]`` table) and `ProfileConfig` (a ``[profiles.NAME]`` table).

`LimitsInfo` is the same fields as the runtime summary shows them: a client decodes it, so it ignores keys a newer
server adds, where `Limits` (the operator's settings) refuses unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from .errors import ConfigError

__all__ = ["DEFAULT_PROFILE", "Limits", "LimitsInfo", "ProfileConfig"]

#: The name of the profile a ``runtime_default`` selector resolves to unless the Runtime names another.
DEFAULT_PROFILE = "default"

_Positive = Annotated[int, msgspec.Meta(ge=1)]
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_Seconds = Annotated[float, msgspec.Meta(ge=0)]


class LimitsInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of a Runtime, with the default values.

    Attributes:
        default_page: page size when a request gives no `limit`.
        max_page: largest page `limit`; above it is `limit_too_large`.
        max_body_bytes: largest HTTP request body (the HTTP package enforces it).
        max_input_bytes: largest input `content` in UTF-8 bytes.
        max_wait_s: longest events long-poll `wait`.
        max_workers: most Workers held at once, stopped ones included.
        operation_timeout_s: how long a command may take before it answers `operation_timeout`.
        idempotency_ttl_s: how long an `input_id` is remembered.
        event_retention: newest events kept at least (0 keeps all).
        stream_heartbeat_s: seconds of silence after which an event stream sends a ``: keep-alive`` comment.
        max_streams: most event streams open at once (the HTTP package enforces it).
        max_queue: most runs queued behind a Worker's active run (``on_busy="enqueue"``; the active run is not
            counted); one more is `queue_full`.
        request_timeout_s: how long a run's request for input stays open when its engine gives no timeout.
    """

    default_page: _Positive = 100
    max_page: _Positive = 1000
    max_body_bytes: _Positive = 1_048_576
    max_input_bytes: _Positive = 262_144
    max_wait_s: _Seconds = 30.0
    max_workers: _Positive = 100_000
    operation_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    idempotency_ttl_s: _Seconds = 86_400.0
    event_retention: _NonNegative = 0
    stream_heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    max_streams: _Positive = 1000
    max_queue: _NonNegative = 100
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0


class Limits(LimitsInfo, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[limits]`` table: the fields of `LimitsInfo`, where an unknown key is an error and `default_page` is
    at most `max_page` (`ConfigError` otherwise)."""

    def __post_init__(self) -> None:
        if self.default_page > self.max_page:
            raise ConfigError(f"limits: default_page ({self.default_page}) is above max_page ({self.max_page})")


class ProfileConfig:
    """A named profile: an engine, an optional run timeout and the engine's own options.

    The same fields as a ``[profiles.NAME]`` table::

        ProfileConfig(engine="command", argv=["ruff", "check", "-"], timeout_s=60)

    The options are checked by the engine's options struct when the Runtime is built (unknown keys are errors).
    """

    __slots__ = ("engine", "options", "timeout_s")

    def __init__(self, engine: str = "echo", *, timeout_s: float | None = None, **options: Any) -> None:
        if not isinstance(engine, str) or not engine:
            raise ConfigError("profile: `engine` must be a non-empty string")
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0
        ):
            raise ConfigError(f"profile: `timeout_s` must be a positive number, got {timeout_s!r}")
        self.engine = engine
        self.timeout_s: float | None = float(timeout_s) if timeout_s is not None else None
        self.options: dict[str, Any] = dict(options)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ProfileConfig:
        """Build a profile from a TOML table such as ``{"engine": "command", "argv": [...]}``."""
        fields = dict(table)
        engine = fields.pop("engine", None)
        if engine is None:
            raise ConfigError("profile: `engine` is required")
        timeout_s = fields.pop("timeout_s", None)
        return cls(engine, timeout_s=timeout_s, **fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProfileConfig):
            return NotImplemented
        return (self.engine, self.timeout_s, self.options) == (other.engine, other.timeout_s, other.options)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Option values may hold secrets (an `env` table): name the keys only.
        keys = ", ".join(sorted(self.options))
        return f"ProfileConfig(engine={self.engine!r}, timeout_s={self.timeout_s!r}, options=[{keys}])"
