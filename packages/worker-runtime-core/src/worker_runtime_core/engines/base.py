"""The engine protocol: what drives a Worker's runs.

An engine class names itself, declares an options struct (checked when the Runtime is built; unknown keys
are errors) and the capabilities it offers, and implements `run`. One engine instance serves every run of
the profiles that name it with the same options. A run is cancelled through anyio cancellation: an engine
that holds outside resources (a child process, a request) releases them in ``finally`` or a shielded scope.

To fail a run with a code of its own, an engine raises `EngineError(code, message)`; any other exception
fails the run with code ``engine_error``.

An engine answers with whole entries (`RunContext.emit`) or writes one entry as it grows
(`RunContext.begin_entry`): each piece goes out at once as an output delta to the streams that ask for them,
and `EntryWriter.end` commits the whole entry. A run has at most one entry in progress; when the run ends for any
reason with one still open, the Runtime commits the text written so far before the run's terminal event (an
entry with no text is dropped), so nothing a viewer saw disappears::

    async def run(self, ctx: RunContext) -> None:
        async with ctx.begin_entry() as entry:
            async for piece in source():
                entry.write(piece)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar, Literal

import msgspec

from ..models import Intent, TranscriptEntry, WorkerRef

__all__ = ["Engine", "EntryWriter", "InputAnswer", "NoOptions", "RunContext"]


class NoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options of an engine that takes none."""


class InputAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What `RunContext.request_input` returns: how the request closed and the answer.

    Attributes:
        outcome: ``answered``, or ``timed_out`` (nobody answered in time).
        approved: an approval's answer (False when it timed out: it counts as refused); None for a question.
        content: the answer's text (a question's answer, an approval's optional comment); None when none came.
    """

    outcome: Literal["answered", "timed_out", "closed"]
    approved: bool | None = None
    content: str | None = None


class EntryWriter(ABC):
    """An entry a run is producing. Text written goes out as output deltas; `end()` commits the whole entry.

    Use it as an async context manager: a block that exits normally ends the entry; on any exception (cancellation
    included) the entry stays open, and the run's end commits what was written. Offsets and lengths are `str`
    lengths (Unicode code points). Call it from the Runtime's event loop (the engine's own task), not a thread.

    Attributes:
        sequence: the transcript sequence the entry will get.
        role: the entry's role (``assistant`` unless the engine asked for another).
    """

    __slots__ = ()

    sequence: int
    role: str

    @property
    @abstractmethod
    def text(self) -> str:
        """Everything written so far."""

    @abstractmethod
    def write(self, text: str) -> None:
        """Add `text` to the entry and publish it as a delta (synchronous and cheap; ``""`` is ignored).

        Raises:
            EntryInProgressError: the entry has been ended (or is being committed).
            TypeError: `text` is not a `str`.
        """

    @abstractmethod
    async def end(self) -> int:
        """Commit the whole entry through the journal (a ``transcript_appended`` event); returns its sequence. A
        second call returns the same sequence. Once called, `write` raises.

        Raises:
            RuntimeUnavailableError: the store cannot write; nothing was committed and the entry stays open (the
                run's end commits it, or call `end` again).
        """

    async def __aenter__(self) -> EntryWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.end()
        # on any exception (cancellation included) the entry stays open: the run's end commits what was written


class RunContext(ABC):
    """What an engine sees of the run it serves.

    Attributes:
        worker_ref: the Worker the run belongs to.
        run_id: this run's id.
        intent: what the Worker was created for.
        kind: ``user`` or ``system``, the kind of the input.
        content: the input's content.
        input_sequence: transcript sequence of the input's own entry.
    """

    __slots__ = ()

    worker_ref: WorkerRef
    run_id: str
    intent: Intent
    kind: str
    content: str
    input_sequence: int

    @abstractmethod
    async def emit(self, content: str, *, role: str = "assistant") -> int:
        """Append an entry to the transcript as part of this run; returns its sequence.

        Raises `RuntimeUnavailableError` when the store cannot write, `EntryInProgressError` while an entry of
        this run is open (`begin_entry`).
        """

    @abstractmethod
    def begin_entry(self, *, role: str = "assistant") -> EntryWriter:
        """Begin an entry that grows as the engine writes it (see `EntryWriter`); end it, or let the run's end
        commit it.

        Raises:
            EntryInProgressError: another entry of this run is open.
            ValueError: `role` is not one of ``user``, ``system``, ``assistant``, ``tool``.
        """

    @abstractmethod
    async def history(self, limit: int) -> list[TranscriptEntry]:
        """The newest entries before this run's input, oldest first, at most `limit` (capped at `max_page`)."""

    @abstractmethod
    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        """Count tokens for this run; they show on the run, the Worker and the runtime summary."""

    async def request_input(
        self,
        kind: Literal["approval", "question"],
        prompt: str,
        *,
        data: Any = None,
        timeout_s: float | None = None,
    ) -> InputAnswer:
        """Ask the Backend and wait for the answer: an ``approval`` of an action, or a ``question``.

        The run is ``waiting`` (its `pending_request` set, an ``input_requested`` event logged) until an answer
        comes (``POST .../runs/{run_id}/respond``) or `timeout_s` passes (the Runtime's ``request_timeout_s`` when
        None): then it is ``running`` again, and its own run timeout, paused while it waited, goes on. One
        request is open per run at a time. A cancel or stop of the run ends the wait like any other await.

        Raises:
            InvalidRequestError: a bad `kind`, an empty `prompt`, `data` that is not JSON, a `timeout_s` that is
                not a positive number, or another request of this run is still open.
            RuntimeUnavailableError: the store cannot write the request.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot ask for input")

    async def park_for_input(
        self,
        kind: Literal["approval", "question"],
        prompt: str,
        *,
        data: Any = None,
        timeout_s: float | None = None,
    ) -> None:
        """Ask the Backend like `request_input`, but without waiting: return from the engine's `run` (or
        `resume`) right after this, and the run waits as data only (no task, no coroutine held for it); once the
        request is answered or times out, the Runtime calls the engine's `resume` with the answer. The run is
        ``waiting`` meanwhile, exactly as with `request_input` (cancel, stop, shutdown and restarts alike). Nothing
        else of the run may be written after it in the same call (an entry, another request).

        Raises:
            InvalidRequestError: as `request_input`.
            RuntimeUnavailableError: the store cannot write the request.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot ask for input")


class Engine(ABC):
    """Base class of engines; subclass it and register the class (or an entry point) under `name`."""

    name: ClassVar[str]
    options_type: ClassVar[type[msgspec.Struct]] = NoOptions
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: msgspec.Struct) -> None:
        self.options = options

    @abstractmethod
    async def run(self, ctx: RunContext) -> None:
        """Serve one run: read `ctx.content`, emit transcript entries. Cancelled through anyio."""

    async def resume(self, ctx: RunContext, answer: InputAnswer) -> None:
        """Go on with a run that parked with `RunContext.park_for_input`, given its answer (``answered`` or
        ``timed_out``); it may park again. Engines that never park need not define it."""
        raise NotImplementedError(f"engine {self.name!r} parked a run but has no resume")

    async def aclose(self) -> None:  # noqa: B027  # optional hook, empty on purpose
        """Release what the engine holds when the Runtime closes."""
