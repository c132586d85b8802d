"""The journal: every state change goes to the store through here, and is shown only once the store confirms it.

A caller stages a change (one `Batch`: the event plus the Worker's new state, built on a copy), submits it, and
applies it to what readers see only after `submit` returns. The journal hands out event ids; when a write fails
it refuses new writes until the writes in flight have settled (a store fails every batch queued behind a failed
one), then takes the next id from the store's committed id, so an id the store holds is never handed out again
and the log has no gap. Long-polling readers are woken after each confirmed write, and a caller whose write was
refused can wait for the store to write again (`wait_writable`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .errors import RuntimeUnavailableError
from .records import EventRecord
from .stores.base import Batch, RuntimeStore
from .times import now

__all__ = ["Journal", "STORE_CANNOT_WRITE"]

logger = logging.getLogger("worker_runtime_core")

#: What a caller is told when the store fails a write; the cause (paths, OS errors) goes to the log only.
STORE_CANNOT_WRITE = "the store cannot write right now; retry later (the Runtime's log has the cause)"
_SETTLING = "the store failed a write; retry when the writes in flight have settled"


class Journal:
    """Event ids and the one door to the store's `write`.

    A store that offers a synchronous ``append(batch)`` beside its `write` (its writes never suspend, like
    `MemoryStore`) is called without a coroutine, unless a subclass overrode `write` alone; any other store's
    write is shielded, so a cancelled caller never leaves a batch half-written.
    """

    __slots__ = (
        "_append",
        "_failed",
        "_write_many",
        "_in_flight",
        "_next_id",
        "_signal",
        "_store",
        "_writable",
        "on_notify",
        "suspends",
    )

    def __init__(self, store: RuntimeStore) -> None:
        self._store = store
        self._append: Callable[[Batch], None] | None = _sync_append(store)
        #: Whether a write may suspend; when False, staging and submitting is one synchronous step.
        self.suspends = self._append is None
        #: The store's optional ``write_many`` (one group commit of many batches), None when it has none.
        self._write_many: Callable[[list[Batch]], Awaitable[list[Exception | None]]] | None = (
            _optional(store, "write_many") if self.suspends else None
        )
        self._next_id = 1
        self._in_flight = 0
        self._failed = False  # until the writes in flight settle after a failed one
        self._signal: anyio.Event | None = None  # long-polling readers
        self._writable: anyio.Event | None = None  # callers waiting for the store to write again
        #: Called with the long-polling readers' wake-up (the delta hub wakes its waiting subscriptions with it).
        self.on_notify: Callable[[], None] | None = None

    def opened(self, last_event_id: int) -> None:
        """Continue after the newest id of the opened store."""
        self._next_id = last_event_id + 1

    @property
    def newest_id(self) -> int:
        """The newest event id the store holds: what a reader may have been given."""
        return self._store.committed_id

    @property
    def refusing(self) -> bool:
        """True while a failed write has not settled: a new change would be refused."""
        return self._failed

    def check(self) -> None:
        """Raise `RuntimeUnavailableError` while a failed write has not settled."""
        if self._failed:
            raise RuntimeUnavailableError(_SETTLING)

    def take_id(self) -> int:
        event_id = self._next_id
        self._next_id = event_id + 1
        return event_id

    def event(self, kind: str, worker_id: str | None, run_id: str | None, data: Any) -> EventRecord:
        """A new event with the next id and the current time (staged: nothing is written yet)."""
        event_id = self._next_id
        self._next_id = event_id + 1
        return EventRecord(event_id, kind, worker_id, run_id, now(), data)

    async def submit(self, batch: Batch) -> None:
        """Hand one batch to the store; returns once it is durable.

        Raises:
            RuntimeUnavailableError: the store refused it (nothing of it became visible), or a failed write has
                not settled yet.
        """
        self.check()
        self._in_flight += 1
        try:
            if self._append is not None:
                self._append(batch)
            else:
                with anyio.CancelScope(shield=True):
                    await self._store.write(batch)
        except Exception as exc:
            self._failed = True
            raise _refused(batch, exc) from exc
        else:
            self._confirmed()
        finally:
            self._in_flight -= 1
            if self._failed and not self._in_flight:
                self._next_id = self._store.committed_id + 1
                self._failed = False

    @property
    def writes_many(self) -> bool:
        """Whether `submit_many` writes its batches together (else the caller submits them one by one)."""
        return self._write_many is not None

    async def submit_many(self, batches: list[Batch]) -> list[RuntimeUnavailableError | None]:
        """Hand `batches` to the store's ``write_many`` as one write (see `writes_many`); for each, None once it is
        durable or the error that refused it (nothing of a refused one became visible).

        Raises:
            RuntimeUnavailableError: a failed write has not settled yet (nothing was submitted).
        """
        self.check()
        write_many = self._write_many
        assert write_many is not None
        self._in_flight += 1
        try:
            try:
                with anyio.CancelScope(shield=True):
                    errors = await write_many(batches)
            except Exception as exc:
                self._failed = True
                refused = _refused(batches[0], exc)
                return [refused] * len(batches)
            results: list[RuntimeUnavailableError | None] = []
            for batch, error in zip(batches, errors, strict=True):
                if error is None:
                    results.append(None)
                else:
                    self._failed = True
                    results.append(_refused(batch, error))
            if any(result is None for result in results):
                self._confirmed()
            return results
        finally:
            self._in_flight -= 1
            if self._failed and not self._in_flight:
                self._next_id = self._store.committed_id + 1
                self._failed = False

    def append_now(self, batch: Batch) -> None:
        """`submit` without a coroutine, for a store whose writes never suspend (`suspends` is False).

        Raises:
            RuntimeUnavailableError: the store refused it (nothing of it became visible).
        """
        assert self._append is not None
        try:
            self._append(batch)
        except Exception as exc:
            self._next_id = self._store.committed_id + 1  # nothing else is in flight: resynchronise at once
            raise _refused(batch, exc) from exc
        if self._signal is not None:  # `_confirmed`, inline: this is every write of a memory store
            self.notify()
        if self._writable is not None:
            self.wake_writers()

    def _confirmed(self) -> None:
        """A write is durable: wake the long-polling readers and the callers waiting for the store to write."""
        if self._signal is not None:
            self.notify()
        if self._writable is not None:
            self.wake_writers()

    def notify(self) -> None:
        """Wake every long-polling reader."""
        signal = self._signal
        if signal is not None:
            self._signal = None
            signal.set()
            if self.on_notify is not None:
                self.on_notify()

    async def wait_for_event(self, seconds: float) -> None:
        """Wait until the next confirmed write (or `notify`), at most `seconds`."""
        await self.wait_armed(self.arm(), seconds)

    def arm(self) -> anyio.Event:
        """The signal the next confirmed write (or `notify`) sets. A long-poller arms it before it reads, then
        waits on it with `wait_armed`, so a write confirmed while it reads still wakes it."""
        signal = self._signal
        if signal is None:
            signal = self._signal = anyio.Event()
        return signal

    @staticmethod
    async def wait_armed(signal: anyio.Event, seconds: float) -> None:
        """Wait until `signal` (from `arm`) is set, at most `seconds`; returns at once if it was set meanwhile."""
        with anyio.move_on_after(seconds):
            await signal.wait()

    def wake_writers(self) -> None:
        """Wake every `wait_writable` caller now (to try once more, at shutdown)."""
        if self._writable is not None:
            self._writable.set()
            self._writable = None

    async def wait_writable(self, seconds: float) -> None:
        """Wait until some write is confirmed, at most `seconds` (then the caller tries again by itself)."""
        if self._writable is None:
            self._writable = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._writable.wait()


def _refused(batch: Batch, exc: Exception) -> RuntimeUnavailableError:
    """Log why the store refused `batch` (its own words may name its files) and make the error a caller sees.

    Of the store's `details` only ``outcome`` is passed on (``"unknown"`` after a failed fsync: the batch may be on
    disk, so only a retry with the same ``input_id`` is safe); the rest may name files.
    """
    details: dict[str, Any] = {}
    if isinstance(exc, RuntimeUnavailableError):
        logger.error("the store failed to write event %d: %s", batch.event.id, exc.message)
        if exc.details.get("outcome") == "unknown":
            details["outcome"] = "unknown"
    else:
        logger.exception("the store failed to write event %d", batch.event.id, exc_info=exc)
    return RuntimeUnavailableError(STORE_CANNOT_WRITE, details=details)


def _optional(store: RuntimeStore, name: str) -> Any:
    """The store's optional method `name`, if the class that defines it also defines its `write` (a subclass that
    overrides only `write`, to inject faults say, is written through `write`); else None."""
    method = getattr(store, name, None)
    if not callable(method):
        return None
    mro = type(store).__mro__
    owner = {n: next((c for c in mro if n in vars(c)), None) for n in (name, "write")}
    return method if owner[name] is owner["write"] else None


def _sync_append(store: RuntimeStore) -> Callable[[Batch], None] | None:
    """The store's optional synchronous ``append``, if the class that defines it also defines its `write` (a
    subclass that overrides only `write`, to inject faults say, is written through `write`)."""
    append = getattr(store, "append", None)
    if not callable(append):
        return None
    mro = type(store).__mro__
    owner = {name: next((c for c in mro if name in vars(c)), None) for name in ("append", "write")}
    return append if owner["append"] is owner["write"] else None
