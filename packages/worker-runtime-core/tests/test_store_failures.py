"""A store that cannot write: the call fails with `RuntimeUnavailableError`, nothing changes, and the Runtime
recovers without a gap in the event ids once the writes in flight have settled."""

from __future__ import annotations

import anyio
import pytest

from worker_runtime_core import (
    MemoryStore,
    RunNotFoundError,
    Runtime,
    RuntimeUnavailableError,
    StoreCorruptError,
    WorkerNotFoundError,
)
from worker_runtime_core.records import EventRecord, RunRecord, TranscriptRecord
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
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.send_input("w", "lost")
        assert info.value.message == "the store cannot write right now; retry later (the Runtime's log has the cause)"
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


async def test_a_start_whose_first_write_fails_raises_closes_the_store_and_leaves_the_callers_scopes_alone() -> None:
    closed: list[bool] = []

    class _Store(FlakyStore):
        async def close(self) -> None:
            closed.append(True)
            await super().close()

    store = _Store()
    store.failures = 1  # runtime_started cannot be written
    rt = Runtime(store=store)
    with anyio.CancelScope():  # entered before start: it must still be the task's current scope when left
        with pytest.raises(RuntimeUnavailableError):
            await rt.start()
    assert rt.status == "closed" and closed == [True]
    await rt.close()  # returns at once
    assert closed == [True]


async def test_a_corrupt_read_marks_only_that_worker_and_lists_a_diagnostic() -> None:
    store = FlakyStore()
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="bad")
        await rt.create_worker(worker_id="good")
        store.corrupt_worker = "bad"
        with pytest.raises(StoreCorruptError) as first:
            await rt.transcript("bad")
        assert first.value.details == {"path": "/x/bad/transcript.jsonl", "offset": 42}
        assert "bad line" not in first.value.message  # the store's own words stay in the diagnostic
        with pytest.raises(StoreCorruptError) as info:
            await rt.get_worker("bad")
        assert info.value.details == {"path": "/x/bad/transcript.jsonl", "offset": 42}
        assert (await rt.get_worker("good")).status == "idle"
        [diag] = await rt.diagnostics()
        assert (diag.code, diag.path, diag.offset) == ("store_corrupt", "/x/bad/transcript.jsonl", 42)
        assert diag.message == "bad line"
        assert diag.worker_ref is not None and diag.worker_ref.worker_id == "bad"


class _ClosedStore(MemoryStore):
    """A store that refuses writes in its own words, naming its files."""

    refuse = False

    async def write(self, batch: Batch) -> None:
        if self.refuse:
            raise RuntimeUnavailableError("fsync of /srv/secret/events/0001.jsonl failed (I/O error)")
        await super().write(batch)


async def test_a_store_refusal_reaches_the_caller_without_the_stores_paths(caplog: pytest.LogCaptureFixture) -> None:
    store = _ClosedStore()
    async with Runtime(store=store) as rt:
        await rt.create_worker(worker_id="w")
        store.refuse = True
        with pytest.raises(RuntimeUnavailableError) as info:
            await rt.send_input("w", "lost")
        store.refuse = False
    assert "/srv/secret" not in info.value.message and info.value.details == {}
    assert "/srv/secret/events/0001.jsonl" in caplog.text


class _CorruptLog(MemoryStore):
    async def read_events(self, after: int, limit: int, worker_id: str | None) -> list[EventRecord]:
        raise StoreCorruptError(
            "/srv/log.jsonl at byte 7: unreadable line: JSON is malformed",
            details={"path": "/srv/log.jsonl", "offset": 7},
        )


async def test_a_corrupt_event_log_keeps_path_and_offset_but_not_the_stores_words() -> None:
    async with Runtime(store=_CorruptLog()) as rt:
        with pytest.raises(StoreCorruptError) as info:
            await rt.read_events()
    assert info.value.details == {"path": "/srv/log.jsonl", "offset": 7}
    assert "malformed" not in info.value.message and "/srv" not in info.value.message
