"""Engine test helpers: a small fake `RunContext` that records every piece an engine writes, so a test can watch an
entry grow while the engine is still running (no Runtime, no timing), and `follow_text`, which watches the same
through a real Runtime's output deltas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from worker_runtime_core import (
    AssistantIntent,
    DeltaSubscription,
    EntryInProgressError,
    EntryWriter,
    RunContext,
    TranscriptEntry,
    WorkerRef,
)


class FakeEntry(EntryWriter):
    """An entry in progress: `writes` is every non-empty piece in order; `ended` once `end()` was called."""

    def __init__(self, ctx: FakeContext, sequence: int, role: str) -> None:
        self._ctx = ctx
        self.sequence = sequence
        self.role = role
        self.writes: list[str] = []
        self.ended = False

    @property
    def text(self) -> str:
        return "".join(self.writes)

    def write(self, text: str) -> None:
        if self.ended:
            raise EntryInProgressError("the entry has ended")
        if text:
            self.writes.append(text)
            self._ctx.changed()

    async def end(self) -> int:
        if not self.ended:
            self.ended = True
            self._ctx.open = None
            self._ctx.committed.append((self.role, self.text))
            self._ctx.changed()
        await anyio.lowlevel.checkpoint()
        return self.sequence


class FakeContext(RunContext):
    """What an engine sees, with no Runtime behind it.

    `entries` holds every entry begun; `committed` the (role, content) of every entry emitted or ended, in order;
    `open` the entry in progress; `usage` every `add_usage` call.
    """

    def __init__(self, content: str = "hello", *, kind: str = "user", history: list[TranscriptEntry] | None = None):
        self.worker_ref = WorkerRef(runtime_id="rt-fake", worker_id="w1")
        self.run_id = "run-1"
        self.intent = AssistantIntent()
        self.kind = kind
        self.content = content
        self.input_sequence = 0
        self._history = history or []
        self.entries: list[FakeEntry] = []
        self.committed: list[tuple[str, str]] = []
        self.open: FakeEntry | None = None
        self.usage: list[tuple[int, int]] = []
        self._changed = anyio.Event()
        self._next_sequence = 1

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def text(self) -> str:
        """The text of the entry in progress, else of the last entry begun, else ``""``."""
        return self.entries[-1].text if self.entries else ""

    async def wait_for(self, predicate: Callable[[FakeContext], Any]) -> None:
        """Return once `predicate(self)` holds; it is checked after every write (bounded, to fail a hang)."""
        with anyio.fail_after(30):
            while not predicate(self):
                await self._changed.wait()

    def begin_entry(self, *, role: str = "assistant") -> EntryWriter:
        if self.open is not None:
            raise EntryInProgressError("an entry is in progress")
        entry = self.open = FakeEntry(self, self._next_sequence, role)
        self._next_sequence += 1
        self.entries.append(entry)
        self.changed()
        return entry

    async def emit(self, content: str, *, role: str = "assistant") -> int:
        if self.open is not None:
            raise EntryInProgressError("emit while an entry is in progress")
        self.committed.append((role, content))
        self._next_sequence += 1
        self.changed()
        await anyio.lowlevel.checkpoint()
        return self._next_sequence - 1

    async def history(self, limit: int) -> list[TranscriptEntry]:
        return self._history[-limit:] if limit else []

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.usage.append((input_tokens, output_tokens))


async def follow_text(sub: DeltaSubscription, until: Callable[[str], bool]) -> str:
    """Read `sub`'s deltas (one entry's) into the entry's text until `until(text)` holds; returns the text. Each
    delta must start within the text so far (its offset addresses it)."""
    text = ""
    with anyio.fail_after(30):
        while True:
            for delta in sub.pending(upto=2**62):
                assert delta.offset <= len(text)
                text = text[: delta.offset] + delta.text
            if until(text):
                return text
            await sub.wait()
