"""The store protocol: what the Runtime needs from persistence.

A store holds a Runtime's event log, transcripts, finished runs and Worker records. The Runtime keeps the
Worker records in memory as well and hands the store one `Batch` per state change: exactly one event plus
what changed with it. `write` returns once the batch is durable under the store's policy; only then does the
Runtime acknowledge or serve it.

A store may also report its health as a `health` property (optional: a store without one counts as ``"ok"``;
read it through `store_health`):

* ``"ok"``: writes are expected to succeed.
* ``"cannot_write"``: the last write was refused with nothing of it on disk (a full disk, a permission), or
  something the store derives from its log is behind it; the next write is tried normally, and the store turns
  ``"ok"`` by itself once a write succeeds again.
* ``"outcome_unknown"``: a write failed in a way that may or may not have left it on disk (a failed fsync).
  The store refuses every later write (`RuntimeUnavailableError` with ``details={"outcome": "unknown"}``),
  never reports a `committed_id` below an id that may be on disk, and writes again only once it has been
  reopened (a restart) and has re-verified what it holds.

A store that writes several batches together (a group commit) may also offer ``async write_many(batches)``
(optional, found by name like the memory store's synchronous ``append``): it takes the batches in order as
one write and returns, for each, None once it is durable or the `RuntimeUnavailableError` that refused it
(raising refuses them all). The Runtime hands it the run ends of a start-up, one batch per interrupted run,
instead of a task each.

The Runtime shows it as `Runtime.store_health`, and the HTTP server's ``/readyz`` answers 503
``{"status": "store_unavailable"}`` while it is not ``"ok"``.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import msgspec

from ..config import Limits
from ..models import Diagnostic, StoreInfo
from ..records import EventRecord, InputKeyRecord, RunRecord, TranscriptRecord, WorkerRecord

__all__ = ["Batch", "RuntimeStore", "StoreHealth", "StoreState", "store_health"]

#: What a store says of its writes: see the module docstring.
StoreHealth = Literal["ok", "cannot_write", "outcome_unknown"]


class Batch(msgspec.Struct, kw_only=True, gc=False):
    """One state change: an event and, with it, a Worker's new state, a transcript entry, an ended run, a new
    input key, or the Worker's deletion. All of it becomes durable together or not at all.

    `worker` is the live record; a store that persists it must encode it before its first ``await``.

    `queued_content` is set on the ``input_accepted`` of an input queued behind the active run (``on_busy=
    "enqueue"``) only: its content, which the Worker's state does not hold (so that it is written once, not with
    every later change of the Worker). A durable store keeps it until that run (the event's `run_id`) starts or
    ends without starting, whichever batch names it next, or the Worker is deleted, and hands it back at open in
    `StoreState.queued_content`; it is never part of served event data.
    """

    event: EventRecord
    worker: WorkerRecord | None = None
    entry: TranscriptRecord | None = None
    ended_run: RunRecord | None = None
    input_key: InputKeyRecord | None = None
    delete_worker: bool = False
    queued_content: str | None = None


class StoreState(msgspec.Struct, kw_only=True):
    """What a store hands the Runtime when it opens: identity, Workers and where the event log stands.

    Workers whose `active_run` is set were running when the store was last closed (or crashed); the Runtime
    marks those runs ``interrupted``. `corrupt` maps a worker id to the ``(path, offset)`` of its damage.
    `queued_content` maps the run id of every queued run (in `WorkerRecord.queued`) to its input's content.
    """

    runtime_id: str
    display_name: str
    created_at: float
    last_event_id: int = 0
    workers: list[WorkerRecord] = msgspec.field(default_factory=list)
    input_keys: list[InputKeyRecord] = msgspec.field(default_factory=list)
    diagnostics: list[Diagnostic] = msgspec.field(default_factory=list)
    corrupt: dict[str, tuple[str, int]] = msgspec.field(default_factory=dict)
    queued_content: dict[str, str] = msgspec.field(default_factory=dict)


@runtime_checkable
class RuntimeStore(Protocol):
    """Persistence of one Runtime. Methods are called from the Runtime's event loop only.

    `write` must not be cancellable half-way: a store that suspends shields its work, so a batch is either
    durable or not written. When it cannot write it raises `RuntimeUnavailableError` and nothing of the batch
    (nor of any batch queued behind it) becomes visible.
    """

    @property
    def info(self) -> StoreInfo:
        """Kind, path and fsync policy, for the runtime summary."""
        ...

    @property
    def committed_id(self) -> int:
        """The id of the newest event the store has taken (0 before any): after a failed write, the Runtime's next
        event id is this plus one, so an id the store holds is never handed out again. After a write whose outcome
        is unknown it counts that write's events as taken (they may be on disk)."""
        ...

    async def open(self, runtime_id: str | None, display_name: str | None, *, limits: Limits) -> StoreState:
        """Open (or create) the store; a `runtime_id` that differs from the stored one is a `ConfigError`.

        `limits` are the Runtime's: a store follows `event_retention` (keep at least that many newest events) and
        `idempotency_ttl_s` (keep input keys at least that long, across restarts for a durable store) from them,
        so each is set once, on the Runtime.
        """
        ...

    async def write(self, batch: Batch) -> None:
        """Make `batch` durable; raise `RuntimeUnavailableError` when it cannot."""
        ...

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        """Entries `start` to `start + limit` of a Worker's transcript, at O(limit) cost."""
        ...

    async def read_events(self, after: int, limit: int, worker_id: str | None = None) -> list[EventRecord]:
        """Up to `limit` events with id above `after` (only those naming `worker_id` when given), in id order.

        Raises `CursorExpiredError` when `after` is older than what the store keeps.
        """
        ...

    async def read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        """A finished run of a Worker, or None."""
        ...

    async def close(self) -> None:
        """Flush and release the store; idempotent."""
        ...


def store_health(store: object) -> StoreHealth:
    """The `health` of a store, ``"ok"`` for a store that has no such property (or reports something else)."""
    health = getattr(store, "health", "ok")
    if health == "cannot_write":
        return "cannot_write"
    if health == "outcome_unknown":
        return "outcome_unknown"
    return "ok"
