"""A store that cannot write: the call fails with `RuntimeUnavailableError`, nothing changes, and the Runtime
recovers without a gap in the event ids once the writes in flight have settled."""

from __future__ import annotations

import pytest

from worker_runtime_core import (
    MemoryStore,
    RunNotFoundError,
    Runtime,
    RuntimeUnavailableError,
    StoreCorruptError,
    WorkerNotFoundError,
)
from worker_runtime_core.records import RunRecord, TranscriptRecord
from worker_runtime_core.stores import Batch


class FlakyStore(MemoryStore):
    """A memory store whose next writes fail, and whose reads of one worker are corrupt, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.corrupt_worker: str | None = None

    async def write(self, batch: Batch) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        await super().write(batch)

    async def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptRecord]:
        if worker_id == self.corrupt_worker:
            raise StoreCorruptError("bad line", details={"path": f"/x/{worker_id}/transcript.jsonl", "offset": 42})
        return await super().read_transcript(worker_id, start, limit)

    async def read_run(self, worker_id: str, run_id: str) -> RunRecord | None:
        return await super().read_run(worker_id, run_id)


async def test_a_failed_write_changes_nothing_and_the_next_call_succeeds_without_a_gap() -> None:
    store = FlakyStore()
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        before = await rt.get_worker("w")
        store.failures = 1
        with pytest.raises(RuntimeUnavailableError, match="No space"):
            await rt.send_input("w", "lost")
        assert await rt.get_worker("w") == before
        with pytest.raises(RunNotFoundError):
            await rt.get_run("w", f"run-{before.last_event_id + 1}")
        store.failures = 1
        with pytest.raises(RuntimeUnavailableError):
            await rt.create_worker(worker_id="v")
        with pytest.raises(WorkerNotFoundError):
            await rt.get_worker("v")
        ack = await rt.send_input("w", "kept")
        await rt.wait_for_run("w", ack.run_id)
        ids = [e.id for e in (await rt.read_events()).events]
        assert ids == list(range(1, len(ids) + 1))
        assert [e.content for e in (await rt.transcript("w")).items] == ["kept", "kept"]


async def test_a_corrupt_read_marks_only_that_worker_and_lists_a_diagnostic() -> None:
    store = FlakyStore()
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="bad")
        await rt.create_worker(worker_id="good")
        store.corrupt_worker = "bad"
        with pytest.raises(StoreCorruptError):
            await rt.transcript("bad")
        with pytest.raises(StoreCorruptError) as info:
            await rt.get_worker("bad")
        assert info.value.details == {"path": "/x/bad/transcript.jsonl", "offset": 42}
        assert (await rt.get_worker("good")).status == "idle"
        [diag] = await rt.diagnostics()
        assert (diag.code, diag.path, diag.offset) == ("store_corrupt", "/x/bad/transcript.jsonl", 42)
        assert diag.worker_ref is not None and diag.worker_ref.worker_id == "bad"
