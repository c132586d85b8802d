"""`follow_run`: one run's text as it grows, for the common "show the answer as it comes" case.

What it yields (`FollowItem`):

* `TextDelta`: new text of one of the run's output entries, at code-point `offset`. The `TextDelta`s of one entry
  are contiguous and, added up in order, are exactly the entry's final `content`: a delta at an offset already
  shown is not shown again (a reconnect's snapshot, a replayed delta), and what the deltas did not show comes as
  one last `TextDelta` before its `EntryDone`.
* `EntryDone`: an entry of the run was committed; `entry` is the whole `TranscriptEntry`.
* `RunDone`: the run ended; `run` is its `RunInfo` at its terminal status. Always the last item.

The run's input (its own entry, at `input_sequence`) is not yielded: only what the run produced.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from worker_runtime_core import (
    TERMINAL_RUN_STATUSES,
    OutputDelta,
    RunEndedEvent,
    RunInfo,
    TranscriptAppendedEvent,
    TranscriptEntry,
    UnknownEvent,
)

from ._following import Following

if TYPE_CHECKING:
    from ._client import RuntimeClient

__all__ = ["EntryDone", "FollowItem", "RunDone", "RunFollower", "TextDelta"]


class TextDelta(msgspec.Struct, frozen=True, kw_only=True):
    """New text of the entry with transcript sequence `sequence`, starting at code-point `offset` in it."""

    sequence: int
    offset: int
    text: str


class EntryDone(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of the run, committed: its `content` is everything the `TextDelta`s of its sequence showed."""

    entry: TranscriptEntry


class RunDone(msgspec.Struct, frozen=True, kw_only=True):
    """The run ended: `run` at its terminal status (``completed``, ``failed``, ...)."""

    run: RunInfo


FollowItem: TypeAlias = TextDelta | EntryDone | RunDone


class RunFollower(Following[FollowItem]):
    """What `RuntimeClient.follow_run` returns: an async iterator of `FollowItem` and an async context manager
    (leaving it closes the stream). It ends after its `RunDone`."""

    def __init__(self, client: RuntimeClient, worker_id: str, run_id: str) -> None:
        self.worker_id = worker_id
        self.run_id = run_id
        self._client = client
        self._shown: dict[int, int] = {}  # sequence -> code points shown of an entry in progress
        self._done: set[int] = set()  # sequences whose EntryDone was yielded
        self._input_sequence: int | None = None
        self._items: AsyncGenerator[FollowItem, None] = self._follow()

    def __repr__(self) -> str:
        return f"RunFollower(worker_id={self.worker_id!r}, run_id={self.run_id!r})"

    async def _follow(self) -> AsyncGenerator[FollowItem, None]:
        client, wid, rid = self._client, self.worker_id, self.run_id
        # The cursor first, then the run: whatever happens after the cursor comes on the stream, whatever happened
        # before it is in the run's state and the transcript, so a run that already ended is not missed.
        cursor = (await client.get_worker(wid)).last_event_id
        run = await client.get_run(wid, rid)
        self._input_sequence = run.input_sequence
        start = run.input_sequence  # null while the run is queued: it has no entries yet
        while start is not None:
            page = await client.transcript(wid, start=start, run_id=rid)
            for committed in page.items:
                for item in self._entry(committed):
                    yield item
            start = page.next_start
        if run.status in TERMINAL_RUN_STATUSES:
            yield RunDone(run=run)
            return
        async with client.stream_events(after=cursor, worker_id=wid, run_id=rid, deltas=True) as stream:
            async for event in stream:
                if isinstance(event, OutputDelta):
                    delta = self._delta(event)
                    if delta is not None:
                        yield delta
                elif isinstance(event, TranscriptAppendedEvent):  # (an input's own entry is not the run's output)
                    entry = event.entry
                    if entry is None and event.run_id == rid:  # a server that does not inline entries
                        page = await client.transcript(wid, start=event.data.sequence, limit=1)
                        entry = page.items[0] if page.items else None
                    if entry is not None:
                        for item in self._entry(entry):
                            yield item
                elif isinstance(event, RunEndedEvent):
                    if event.run_id == rid:
                        yield RunDone(run=event.data.run)
                        return
                elif isinstance(event, UnknownEvent) and event.run_id == rid and event.kind.startswith("run_"):
                    run = await client.get_run(wid, rid)  # a newer server's kind: the run's state decides
                    if run.status in TERMINAL_RUN_STATUSES:
                        yield RunDone(run=run)
                        return

    def _delta(self, delta: OutputDelta) -> TextDelta | None:
        """The part of `delta` not shown yet, or None."""
        if delta.run_id != self.run_id or delta.sequence in self._done or delta.sequence == self._input_sequence:
            return None
        shown = self._shown.get(delta.sequence, 0)
        end = delta.offset + len(delta.text)
        if delta.offset > shown or end <= shown:
            return None  # all shown already, or past a hole (the committed entry fills it)
        self._shown[delta.sequence] = end
        return TextDelta(sequence=delta.sequence, offset=shown, text=delta.text[shown - delta.offset :])

    def _entry(self, entry: TranscriptEntry) -> list[FollowItem]:
        """The rest of a committed entry's text not shown yet, then its EntryDone (nothing for one already done,
        another run's or the run's input)."""
        if entry.run_id != self.run_id or entry.sequence in self._done or entry.sequence == self._input_sequence:
            return []
        self._done.add(entry.sequence)
        shown = self._shown.pop(entry.sequence, 0)
        items: list[FollowItem] = []
        if len(entry.content) > shown:
            items.append(TextDelta(sequence=entry.sequence, offset=shown, text=entry.content[shown:]))
        items.append(EntryDone(entry=entry))
        return items
