"""Output deltas: the hub of entries runs are producing, and the subscriptions a stream reads their text through.

An engine's `EntryWriter` puts its entry in the hub when it begins (`OpenEntry`: the entry's text, shared by every
subscription) and the entry leaves it when its commit is confirmed (the moment it becomes visible) or when its run
ends. A `DeltaSubscription` holds no queue of deltas, only how far it has sent each entry in progress, kept on the
entry itself: a stalled consumer costs O(entries in progress), and when it resumes it gets one catch-up delta per
entry from its last offset, late but never wrong. Coalescing is the caller's: it calls `pending` as often as it wants
frames. Nothing here is durable; nothing here is in the event log.

Everything runs on the Runtime's event loop: `EntryWriter.write` is synchronous, and so are `pending` and `close`.
A subscription's `wait` also returns on the Runtime's next durable write (the journal's wake-up calls `wake_all`), so
a stream that follows both the log and the deltas waits on one event and a wake-up costs it no task.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.lowlevel

from .models import OutputDelta, WorkerRef

__all__ = ["DeltaHub", "DeltaSubscription", "OpenEntry"]


class OpenEntry:
    """An entry in progress: where it will go, its text so far, and how far each subscription has been sent it.

    Attributes:
        ref, run_id, sequence, role: the Worker, the run, the transcript sequence the entry will get, its role.
        begun_after: the log's newest event id when the entry began (a stream sends its deltas only once it has
            read the log up to there, so a delta never overtakes the durable frames before it).
        worker_after: the newest event id naming the entry's Worker then: what a stream filtered by Worker waits
            for instead (it sends none of the other Workers' events, so its cursor may never pass `begun_after`).
        commit_id: the id of its ``transcript_appended`` event while that is being written (a stream that has read
            it sends no more deltas of the entry), else None.
        length: the text's length in code points.
        sent: per subscription, the offset it has been sent up to.
    """

    __slots__ = (
        "_head",
        "_tail",
        "begun_after",
        "commit_id",
        "length",
        "ref",
        "role",
        "run_id",
        "sent",
        "sequence",
        "worker_after",
    )

    def __init__(
        self, ref: WorkerRef, run_id: str, sequence: int, role: str, begun_after: int, worker_after: int
    ) -> None:
        self.ref = ref
        self.run_id = run_id
        self.sequence = sequence
        self.role = role
        self.begun_after = begun_after
        self.worker_after = worker_after
        self.commit_id: int | None = None
        self.length = 0
        self.sent: dict[DeltaSubscription, int] = {}
        self._head = ""  # the text joined so far; `_tail` holds the pieces written since (joined on read)
        self._tail: list[str] = []

    @property
    def text(self) -> str:
        """Everything written so far."""
        tail = self._tail
        if not tail:
            return self._head
        head = self._head = self._head + "".join(tail)
        tail.clear()
        return head

    def add(self, text: str) -> None:
        """Append `text` (not empty)."""
        self._tail.append(text)
        self.length += len(text)


class DeltaHub:
    """The entries in progress, one per Worker at most (a Worker has one run at a time and a run one entry), and
    the subscriptions waiting for them to change (or for the next durable write: `arm` is the journal's, called
    before a subscription waits, so that write calls `wake_all`)."""

    __slots__ = ("_arm", "_waiting", "entries", "subscriptions", "version")

    def __init__(self, arm: Callable[[], object] | None = None) -> None:
        self._arm = arm
        self.entries: dict[str, OpenEntry] = {}  # by worker id
        #: Waiting subscriptions by their worker filter (None: unfiltered), woken when an entry of theirs changes.
        self._waiting: dict[str | None, set[DeltaSubscription]] = {}
        self.subscriptions = 0  # open ones
        #: Bumped on every change: a subscription that has seen this version has nothing new to look at.
        self.version = 0

    def subscribe(self, worker_id: str | None, run_id: str | None) -> DeltaSubscription:
        """A new subscription to the entries of `worker_id` (every Worker's when None), only `run_id`'s if given."""
        self.subscriptions += 1
        return DeltaSubscription(self, worker_id, run_id)

    def begin(self, worker_id: str, entry: OpenEntry) -> None:
        """Put Worker `worker_id`'s new entry in progress in the hub."""
        self.entries[worker_id] = entry
        self.changed(worker_id)

    def changed(self, worker_id: str) -> None:
        """Worker `worker_id`'s entry changed (text written, or it began): wake the subscriptions that want it."""
        self.version += 1
        waiting = self._waiting
        if waiting:
            subs = waiting.pop(None, None)
            if subs is not None:
                for sub in subs:
                    sub._wake()
            subs = waiting.pop(worker_id, None)
            if subs is not None:
                for sub in subs:
                    sub._wake()

    def wake_all(self) -> None:
        """A durable write is confirmed: wake every waiting subscription (its stream reads the log next)."""
        waiting = self._waiting
        if waiting:
            groups = list(waiting.values())
            waiting.clear()
            for subs in groups:
                for sub in subs:
                    sub._wake()

    def remove(self, worker_id: str, entry: OpenEntry) -> None:
        """`entry` is committed, dropped, or its run has ended: it leaves the hub with what it held."""
        if self.entries.get(worker_id) is entry:
            del self.entries[worker_id]
            self.version += 1
        entry.sent.clear()


class DeltaSubscription:
    """One stream's view of the entries in progress that match its filter. A (synchronous) context manager that
    closes it. Get one from `Runtime.open_deltas`."""

    __slots__ = ("_closed", "_event", "_hub", "_run_id", "_seen", "_upto", "_worker_id")

    def __init__(self, hub: DeltaHub, worker_id: str | None, run_id: str | None) -> None:
        self._hub = hub
        self._worker_id = worker_id
        self._run_id = run_id
        self._closed = False
        self._event: anyio.Event | None = None  # set while `wait` waits
        self._upto: int | None = None  # the `upto` of the last `pending` (None before the first)
        self._seen = -1  # the hub's version when this subscription last found nothing new for `_upto`

    @property
    def closed(self) -> bool:
        return self._closed

    def _candidates(self) -> list[OpenEntry]:
        entries = self._hub.entries
        wid = self._worker_id
        if wid is None:
            return list(entries.values())
        entry = entries.get(wid)
        if entry is None or (self._run_id is not None and entry.run_id != self._run_id):
            return []
        return [entry]

    def pending(self, upto: int) -> list[OutputDelta]:
        """For every matching entry in progress that was begun when the log's newest id was <= `upto` (the stream's
        durable cursor, so a delta never overtakes the durable frames before it; for a subscription filtered by
        Worker, the newest id naming that Worker) and has text this subscription has not been sent: one delta from
        the last offset sent to the end of the text so far, and mark it sent. The first delta of an entry for this
        subscription is its whole text so far at offset 0 (the snapshot). An entry whose ``transcript_appended`` is
        at or below `upto` gets no more; entries committed since are forgotten. A closed subscription has nothing
        pending."""
        hub = self._hub
        if self._closed or (hub.version == self._seen and upto == self._upto):
            return []
        self._upto = upto
        self._seen = hub.version
        found: list[OutputDelta] = []
        for entry in self._candidates():
            if not self._open_to(entry, upto):
                continue
            length = entry.length
            sent = entry.sent.get(self, 0)
            if length > sent:
                text = entry.text
                found.append(
                    OutputDelta(
                        worker_ref=entry.ref,
                        run_id=entry.run_id,
                        sequence=entry.sequence,
                        offset=sent,
                        text=text[sent:] if sent else text,
                    )
                )
                entry.sent[self] = length
        return found

    def _open_to(self, entry: OpenEntry, upto: int) -> bool:
        """Whether a stream whose cursor is `upto` may be sent deltas of `entry`: it has read the log up to where the
        entry began (for a Worker filter, that Worker's newest event then), and not yet its ``transcript_appended``."""
        if (entry.worker_after if self._worker_id is not None else entry.begun_after) > upto:
            return False
        commit_id = entry.commit_id
        return commit_id is None or commit_id > upto

    def _ready(self) -> bool:
        """Whether `pending` with the last `upto` would find something (any text at all before the first call)."""
        hub = self._hub
        if hub.version == self._seen:
            return False
        upto = self._upto
        for entry in self._candidates():
            if upto is not None and not self._open_to(entry, upto):
                continue
            if entry.length > entry.sent.get(self, 0):
                return True
        if upto is not None:
            self._seen = hub.version  # nothing new for `upto`: the next look may start from here
        return False

    async def wait(self) -> None:
        """Return when `pending` (with the `upto` it was last given) may have something new, when the Runtime has
        confirmed a durable write since the call (any Worker's: the caller reads the log to know), or when the
        subscription is closed. An entry gated by `upto` does not wake it: the stream moves its cursor on durable
        events, then calls `pending` again."""
        if self._closed or self._ready():
            await anyio.lowlevel.checkpoint()
            return
        hub = self._hub
        if hub._arm is not None:
            hub._arm()  # the next confirmed write calls `wake_all`
        event = self._event = anyio.Event()
        key = self._worker_id
        waiting = hub._waiting
        subs = waiting.get(key)
        if subs is None:
            subs = waiting[key] = set()
        subs.add(self)
        try:
            await event.wait()
        finally:
            self._event = None
            subs = waiting.get(key)
            if subs is not None:
                subs.discard(self)
                if not subs:
                    del waiting[key]

    def _wake(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    def close(self) -> None:
        """Stop following; idempotent. Leaves nothing behind in the hub, and wakes a `wait` under way."""
        if self._closed:
            return
        self._closed = True
        hub = self._hub
        hub.subscriptions -= 1
        for entry in self._candidates():
            entry.sent.pop(self, None)
        self._wake()

    def __enter__(self) -> DeltaSubscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
