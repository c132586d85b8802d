"""A run in flight: the Runtime's handles on it (`ActiveRun`, whose state moves by the run lifecycle table), a stop
under way (`Stop`), the `RunContext` an engine is given (`Context`) and the entry it writes incrementally
(`Writer`)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .deltas import OpenEntry
from .engines.base import EntryWriter, InputAnswer, RunContext
from .errors import EntryInProgressError, InternalError, InvalidRequestError, StoreCorruptError, WorkerRuntimeError
from .lifecycle import RunState, next_run_state
from .models import TokenUsage, TranscriptEntry, WorkerRef
from .profiles import Profile
from .records import RunRecord, WorkerRecord
from .wire import WorkerAck

if TYPE_CHECKING:
    from .requests import OpenRequest
    from .supervisor import Supervisor

__all__ = ["ActiveRun", "Context", "Stop", "Writer"]

_ROLES = frozenset({"user", "system", "assistant", "tool"})


class ActiveRun:
    """Runtime-only handles of a run in flight."""

    __slots__ = (
        "answer",
        "content",
        "done",
        "end_event_id",
        "end_status",
        "entry",
        "finished",
        "kind",
        "parked",
        "profile",
        "reason",
        "record",
        "remaining",
        "request",
        "scope",
        "state",
        "worker",
    )

    def __init__(
        self, worker: WorkerRecord, record: RunRecord, profile: Profile | None, kind: str, content: str
    ) -> None:
        self.worker = worker
        self.record = record
        self.profile = profile
        self.kind = kind
        self.content = content
        self.scope: anyio.CancelScope | None = None
        self.end_status: str | None = None  # set by cancel, stop or shutdown before the run has decided
        self.reason: str | None = None
        self.state: RunState = "running"  # moved only by `move`, through the run lifecycle table
        #: The run has ended, or shutdown gave up recording its end: nobody waits for it any longer (set by `move`).
        self.finished = False
        self.done: anyio.Event | None = None  # made only when somebody waits
        self.end_event_id: int | None = None
        self.entry: Writer | None = None  # the entry in progress (`Context.begin_entry`) until it is committed
        self.request: OpenRequest | None = None  # the request for input the engine awaits (`Context.request_input`)
        #: The engine returned after `Context.park_for_input`: the run waits with no task until its answer comes.
        self.parked = False
        self.answer: InputAnswer | None = None  # a parked run's answer, for the engine's `resume`
        self.remaining: float | None = None  # what was left of a parked run's own timeout when it parked

    def move(self, event: str) -> None:
        """Move the run on `event` by the run lifecycle table.

        Raises:
            IllegalTransitionError: the table has no such transition (a bug).
        """
        state = self.state = next_run_state(self.state, event)
        self.finished = state == "ended" or state == "abandoned"

    @property
    def decided(self) -> bool:
        """The run's terminal status is fixed; later cancels change nothing."""
        state = self.state
        return state != "running" and state != "waiting"


class Stop:
    """A stop under way: the first caller's task does it, everybody waits for `done`."""

    __slots__ = ("ack", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ack: WorkerAck | None = None
        self.error: WorkerRuntimeError | None = None


class Context(RunContext):
    """What an engine sees of its run: its input, a bounded view of the transcript, and a way to emit entries."""

    __slots__ = ("_active", "_ref", "_sup", "content", "input_sequence", "intent", "kind", "run_id")

    def __init__(self, sup: Supervisor, active: ActiveRun) -> None:
        self._sup = sup
        self._active = active
        self._ref: WorkerRef | None = None  # made when an engine first asks: most never do
        self.run_id = active.record.run_id
        self.intent = active.worker.intent
        self.kind = active.kind
        self.content = active.content
        self.input_sequence = active.record.input_sequence or 0  # set: a run with an engine has started

    @property
    def worker_ref(self) -> WorkerRef:
        ref = self._ref
        if ref is None:
            ref = self._ref = self._sup.worker_ref(self._active.worker.worker_id)
        return ref

    @worker_ref.setter
    def worker_ref(self, ref: WorkerRef) -> None:
        self._ref = ref

    async def emit(self, content: str, *, role: str = "assistant") -> int:
        active = self._active
        if active.entry is not None:
            raise _in_progress(active)
        if active.parked:
            raise _parked(active)
        if active.end_status is not None:
            await anyio.lowlevel.checkpoint()  # the run is being cancelled: deliver it, append nothing
        return await self._sup.append_output(active, role, content)

    def begin_entry(self, *, role: str = "assistant") -> EntryWriter:
        active = self._active
        if active.entry is not None:
            raise _in_progress(active)
        if role not in _ROLES:
            raise ValueError(f"role must be one of {sorted(_ROLES)}, not {role!r}")
        if active.parked:
            raise _parked(active)
        if active.state != "running":
            raise InternalError(f"run {active.record.run_id} has ended; it takes no new entry")
        sup = self._sup
        record = active.worker
        entry = OpenEntry(
            self.worker_ref,
            active.record.run_id,
            record.transcript_len,
            role,
            sup.journal.newest_id,
            record.last_event_id,
        )
        writer = active.entry = Writer(sup, active, entry)
        sup.hub.begin(record.worker_id, entry)
        return writer

    async def history(self, limit: int) -> list[TranscriptEntry]:
        sup = self._sup
        limit = max(0, min(limit, sup.limits.max_page))
        end = self.input_sequence
        start = max(0, end - limit)
        wid = self._active.worker.worker_id
        try:
            records = await sup.store.read_transcript(wid, start, end - start)
        except StoreCorruptError as exc:
            raise sup.diagnostics.mark_corrupt(wid, exc) from None
        return [r.to_wire() for r in records]

    def request_input(  # no coroutine of its own: one frame less per waiting run
        self,
        kind: str,
        prompt: str,
        *,
        data: Any = None,
        timeout_s: float | None = None,
    ) -> Coroutine[Any, Any, InputAnswer]:
        return self._sup.requests.ask(self._active, kind, prompt, data, timeout_s)

    async def park_for_input(
        self,
        kind: str,
        prompt: str,
        *,
        data: Any = None,
        timeout_s: float | None = None,
    ) -> None:
        active = self._active
        if active.entry is not None:  # nothing may stay open while the run waits with no task
            raise _in_progress(active)
        await self._sup.requests.park(active, kind, prompt, data, timeout_s)

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        run = self._active.record
        if run.usage is not None:
            input_tokens += run.usage.input_tokens
            output_tokens += run.usage.output_tokens
        run.usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)


class Writer(EntryWriter):
    """The entry a run is writing: its text lives in the hub's `OpenEntry` (what the streams read); `end` commits
    it through the supervisor, like `Context.emit`."""

    __slots__ = ("_active", "_committed", "_ending", "_sup", "entry", "role", "sequence")

    def __init__(self, sup: Supervisor, active: ActiveRun, entry: OpenEntry) -> None:
        self._sup = sup
        self._active = active
        self.entry = entry
        self.sequence = entry.sequence
        self.role = entry.role
        self._committed: int | None = None  # the sequence it was committed at
        self._ending: anyio.Event | None = None  # set while its commit is in flight

    @property
    def text(self) -> str:
        return self.entry.text

    @property
    def open(self) -> bool:
        """Not committed yet (nor dropped at the run's end)."""
        return self._committed is None and self._active.entry is self

    def write(self, text: str) -> None:
        if self._ending is not None or not self.open:
            raise EntryInProgressError(
                f"entry {self.sequence} of run {self.entry.run_id} has been ended; begin another to write more",
                details={"run_id": self.entry.run_id, "sequence": self.sequence},
            )
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if text:
            entry = self.entry
            entry.add(text)
            self._sup.hub.changed(self._active.worker.worker_id)

    async def end(self) -> int:
        while self._ending is not None:  # a commit of it is in flight: its outcome decides
            await self._ending.wait()
        if self._committed is not None:
            return self._committed
        if self._active.entry is not self:
            raise EntryInProgressError(
                f"entry {self.sequence} of run {self.entry.run_id} was dropped when its run ended",
                details={"run_id": self.entry.run_id, "sequence": self.sequence},
            )
        ending = self._ending = anyio.Event()
        try:
            self._committed = await self._sup.commit_entry(self._active, self)
        finally:
            self._ending = None
            ending.set()
        return self._committed

    def committed(self, sequence: int) -> None:
        """The supervisor committed it (at the run's end)."""
        self._committed = sequence


def _parked(active: ActiveRun) -> InvalidRequestError:
    """An engine wrote after `park_for_input` in the same call: the run waits with no task, it takes nothing more."""
    return InvalidRequestError(
        f"run {active.record.run_id} has parked for input; it writes nothing more until it resumes",
        details={"run_id": active.record.run_id},
    )


def _in_progress(active: ActiveRun) -> EntryInProgressError:
    writer = active.entry
    assert writer is not None
    return EntryInProgressError(
        f"run {active.record.run_id} has entry {writer.sequence} in progress; end it first",
        details={"run_id": active.record.run_id, "sequence": writer.sequence},
    )
