"""Client settings: timeouts and the retry policy, as small value objects with their defaults."""

from __future__ import annotations

import random

import httpx

__all__ = ["DEFAULT_RETRY", "DEFAULT_TIMEOUT", "RetryPolicy"]

#: Per request: 5 s to connect, 30 s to read (an events long-poll adds its `wait` to the read timeout).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class RetryPolicy:
    """How often and how long to retry what the client's retry rules allow.

    ::

        RetryPolicy()                      # 4 attempts, 0.1 s doubling to at most 2 s, full jitter
        RetryPolicy(attempts=1)            # never retry

    Args:
        attempts: tries in all (1 = no retry).
        backoff_s: the first delay; each retry doubles it.
        max_backoff_s: the cap of one delay.
    """

    __slots__ = ("attempts", "backoff_s", "max_backoff_s")

    def __init__(self, attempts: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0) -> None:
        if attempts < 1 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("attempts must be >= 1 and delays >= 0")
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based): full jitter over the doubled backoff, or the
        server's Retry-After when it names one (capped)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return (self.attempts, self.backoff_s, self.max_backoff_s) == (
            other.attempts,
            other.backoff_s,
            other.max_backoff_s,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RetryPolicy(attempts={self.attempts}, backoff_s={self.backoff_s}, max_backoff_s={self.max_backoff_s})"


DEFAULT_RETRY = RetryPolicy()
