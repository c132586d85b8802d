"""Idempotency keys: each Worker's `input_id`s, in flight or accepted, kept at least `idempotency_ttl_s`."""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable

import anyio

from .errors import IdempotencyConflictError
from .records import InputKeyRecord
from .times import now

__all__ = ["InputKeys", "KeyEntry"]


class KeyEntry:
    """An `input_id` of one Worker: in flight (`record` None, `pending` set) or accepted."""

    __slots__ = ("digest", "pending", "record")

    def __init__(self, digest: bytes, record: InputKeyRecord | None, pending: anyio.Event | None) -> None:
        self.digest = digest
        self.record = record
        self.pending = pending


class InputKeys:
    """The `input_id`s of every Worker, expired in creation order.

    Args:
        ttl: `idempotency_ttl_s`: an accepted key is kept (and answers repeats) for at least this long.
    """

    __slots__ = ("_expiry", "_keys", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._keys: dict[str, dict[str, KeyEntry]] = {}
        self._expiry: deque[tuple[float, str, str]] = deque()

    def restore(self, keys: Iterable[InputKeyRecord], live: Container[str]) -> None:
        """Take the keys a store kept, oldest first, dropping expired ones and those of Workers not in `live`."""
        clock = now()
        ttl = self.ttl
        for key in sorted(keys, key=lambda k: k.created_at):
            if key.created_at + ttl > clock and key.worker_id in live:
                self.remember(key, key.digest)

    async def find(self, wid: str, input_id: str, digest: bytes) -> InputKeyRecord | None:
        """The accepted key `input_id` of Worker `wid`, or None; a key in flight is waited for.

        Raises:
            IdempotencyConflictError: the key was used with another digest.
        """
        while True:
            keys = self._keys.get(wid)
            entry = keys.get(input_id) if keys else None
            if entry is None:
                return None
            if entry.digest != digest:
                raise IdempotencyConflictError(
                    f"input_id {input_id!r} was used with other content", details={"input_id": input_id}
                )
            record = entry.record
            if record is not None:
                if record.created_at + self.ttl <= now():
                    self.forget(wid, input_id)
                    return None
                return record
            assert entry.pending is not None
            await entry.pending.wait()  # the first call is in flight: take its answer

    def reserve(self, wid: str, input_id: str, digest: bytes) -> None:
        """Mark `input_id` in flight: a repeat waits for this call's answer."""
        self._keys.setdefault(wid, {})[input_id] = KeyEntry(digest, None, anyio.Event())

    def remember(self, key: InputKeyRecord, digest: bytes) -> None:
        """An accepted key (its write is durable); answers the repeats waiting for it and expires old keys."""
        keys = self._keys.setdefault(key.worker_id, {})
        entry = keys.get(key.input_id)
        if entry is None:
            keys[key.input_id] = KeyEntry(digest, key, None)
        else:
            entry.record = key
            if entry.pending is not None:
                entry.pending.set()
                entry.pending = None
        expiry = self._expiry
        expiry.append((key.created_at + self.ttl, key.worker_id, key.input_id))
        clock = now()
        while expiry and expiry[0][0] <= clock:
            _, wid, iid = expiry.popleft()
            found = self._keys.get(wid, {}).get(iid)
            if found is not None and found.record is not None:
                if found.record.created_at + self.ttl <= clock:
                    self.forget(wid, iid)

    def forget(self, wid: str, input_id: str) -> None:
        """Drop a key (expired, or its call failed: a repeat waiting for it decides again)."""
        keys = self._keys.get(wid)
        if not keys:
            return
        entry = keys.pop(input_id, None)
        if not keys:
            del self._keys[wid]
        if entry is not None and entry.pending is not None:
            entry.pending.set()

    def drop_worker(self, wid: str) -> None:
        """A Worker was deleted: its keys go with it."""
        self._keys.pop(wid, None)
