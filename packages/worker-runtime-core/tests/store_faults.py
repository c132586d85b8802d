"""A test store that suspends and fails on command: `FaultyStore` wraps any `RuntimeStore`.

Every write can be held until the test releases it, and made to fail: one given write, every write while
`failing` is set, or "at fsync" (the batch reaches the store, then the write fails with an unknown outcome and
the store refuses every later write, as a store does after a failed fsync). Writes complete in the order they
were submitted, whatever order the test releases them in, and a write that does not follow the store's
committed id fails (as the FS store's log does), so a Runtime that hands out a used id is caught.

    store = FaultyStore()
    store.hold = True
    task = ...send_input...            # its write is now held
    await store.wait_held(1)
    store.fail_ids.add(store.held[0].batch.event.id)
    store.release_all()
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from worker_runtime_core import Limits, MemoryStore, RuntimeStore, RuntimeUnavailableError
from worker_runtime_core.models import StoreInfo
from worker_runtime_core.records import EventRecord, RunRecord, TranscriptRecord
from worker_runtime_core.stores import Batch, StoreHealth, StoreState, store_health

__all__ = ["FaultyStore", "HeldWrite"]


class HeldWrite:
    """One write: `release` lets a held one go on, `done` is set once the store has taken or refused it, and with
    `hold_returns` its caller resumes only at `resume`."""

    def __init__(self, batch: Batch, previous: anyio.Event | None) -> None:
        self.batch = batch
        self.release = anyio.Event()
        self.resume = anyio.Event()
        self.done = anyio.Event()
        self.previous = previous
        self.failed = False


class FaultyStore:
    """Wraps `inner` (a fresh `MemoryStore` when None); see the module docstring."""

    def __init__(self, inner: RuntimeStore | None = None) -> None:
        self.inner: RuntimeStore = inner if inner is not None else MemoryStore()
        self.hold = False  # new writes wait for their `release`
        self.held: list[HeldWrite] = []  # writes waiting for `release`, in submission order
        self.hold_returns = False  # a written batch's caller waits for its `resume` (a late group-commit follower)
        self.returning: list[HeldWrite] = []  # written batches whose callers wait for `resume`
        self.failing = False  # every write fails while set (space ran out, say)
        self.fail_ids: set[int] = set()  # the writes of these event ids fail, once each
        self.fsync_fail_ids: set[int] = set()  # these reach the store, then fail at "fsync"
        self.broken = False  # after a failed fsync: every write fails until reopened
        self.refusing = False  # the last write was refused (nothing of it written): health says cannot_write
        self.written: list[int] = []  # event ids the store confirmed, in order
        self.refused: list[int] = []  # event ids the store refused
        self._last: anyio.Event | None = None  # `done` of the newest write
        self._arrived = anyio.Event()

    # --- test controls ---------------------------------------------------------------------------------------

    async def wait_held(self, count: int) -> None:
        """Wait until at least `count` writes are held."""
        while len(self.held) < count:
            await self._arrived.wait()
            self._arrived = anyio.Event()

    async def wait_returning(self, count: int) -> None:
        """Wait until at least `count` written batches wait for their `resume`."""
        while len(self.returning) < count:
            await self._arrived.wait()
            self._arrived = anyio.Event()

    def release_all(self) -> list[HeldWrite]:
        """Let every held write go on (they still complete in submission order); returns them."""
        writes, self.held = self.held, []
        for write in writes:
            write.release.set()
        return writes

    # --- the protocol ----------------------------------------------------------------------------------------

    @property
    def info(self) -> StoreInfo:
        return self.inner.info

    @property
    def committed_id(self) -> int:
        return self.inner.committed_id

    @property
    def health(self) -> StoreHealth:
        """What it injects: ``outcome_unknown`` after a failed "fsync", ``cannot_write`` while `failing` or after a
        refused write until one succeeds, else the inner store's."""
        if self.broken:
            return "outcome_unknown"
        if self.failing or self.refusing:
            return "cannot_write"
        return store_health(self.inner)

    async def open(self, runtime_id: str | None, display_name: str | None, *, limits: Limits) -> StoreState:
        return await self.inner.open(runtime_id, display_name, limits=limits)

    async def write(self, batch: Batch) -> None:
        write = HeldWrite(batch, self._last)
        self._last = write.done
        with anyio.CancelScope(shield=True):
            try:
                if self.hold:
                    self.held.append(write)
                    self._arrived.set()
                    await write.release.wait()
                else:
                    await anyio.lowlevel.checkpoint()  # a real store suspends on every write
                if write.previous is not None:
                    await write.previous.wait()
                await self._write(write)
            finally:
                write.done.set()  # the next write may go on; this one's caller may still wait below
            if self.hold_returns:
                self.returning.append(write)
                self._arrived.set()
                await write.resume.wait()

    async def _write(self, write: HeldWrite) -> None:
        event_id = write.batch.event.id
        if self.broken:
            self._refuse(write)
            raise RuntimeUnavailableError(
                "the store's fsync failed earlier; restart the Runtime", details={"outcome": "unknown"}
            )
        if self.failing or event_id in self.fail_ids:
            self.fail_ids.discard(event_id)
            self._refuse(write)
            self.refusing = True
            raise RuntimeUnavailableError(f"cannot append event {event_id}: No space left on device")
        if event_id != self.inner.committed_id + 1:
            self._refuse(write)
            raise RuntimeUnavailableError(
                f"event {event_id} does not follow the log (next is {self.inner.committed_id + 1})"
            )
        await self.inner.write(write.batch)
        if event_id in self.fsync_fail_ids:
            self.fsync_fail_ids.discard(event_id)
            self.broken = True
            self._refuse(write)
            raise RuntimeUnavailableError(
                f"fsync after event {event_id} failed: Input/output error", details={"outcome": "unknown"}
            )
        self.refusing = False
        self.written.append(event_id)

    def _refuse(self, write: HeldWrite) -> None:
        write.failed = True
        self.refused.append(write.batch.event.id)

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        return await self.inner.read_transcript(worker_id, start, limit)

    async def read_events(self, after: int, limit: int, worker_id: str | None = None) -> list[EventRecord]:
        return await self.inner.read_events(after, limit, worker_id)

    async def read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        return await self.inner.read_run(worker_id, run_id)

    async def close(self) -> None:
        await self.inner.close()
