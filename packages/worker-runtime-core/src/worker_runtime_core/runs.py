"""A run in flight: the Runtime's handles on it (`ActiveRun`, whose state moves by the run lifecycle table), a stop
under way (`Stop`), and the `RunContext` an engine is given (`Context`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .engines.base import RunContext
from .errors import StoreCorruptError, WorkerRuntimeError
from .lifecycle import RunState, next_run_state
from .models import TokenUsage, TranscriptEntry, WorkerRef
from .profiles import Profile
from .records import RunRecord, WorkerRecord
from .wire import WorkerAck

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["ActiveRun", "Context", "Stop"]


class ActiveRun:
    """Runtime-only handles of a run in flight."""

    __slots__ = (
        "content",
        "done",
        "end_event_id",
        "end_status",
        "finished",
        "kind",
        "profile",
        "reason",
        "record",
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
        return self.state != "running"


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
        self.input_sequence = active.record.input_sequence

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
        if self._active.end_status is not None:
            await anyio.lowlevel.checkpoint()  # the run is being cancelled: deliver it, append nothing
        return await self._sup.append_output(self._active, role, content)

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

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        run = self._active.record
        if run.usage is not None:
            input_tokens += run.usage.input_tokens
            output_tokens += run.usage.output_tokens
        run.usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)
