"""Incremental entries and the delta hub: an engine writes an entry piece by piece, subscriptions see the pieces as
output deltas (snapshot first, gated by the stream's cursor, caught up after a stall), and the entry is committed
through the journal like `emit`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from store_faults import FaultyStore

from worker_runtime_core import (
    DeltaSubscription,
    Engine,
    EntryInProgressError,
    EntryWriter,
    InternalError,
    InvalidRequestError,
    OutputDelta,
    ProfileConfig,
    RunContext,
    Runtime,
    RuntimeUnavailableError,
    WorkerRef,
)
from worker_runtime_core.deltas import DeltaHub

Step = Callable[[RunContext], Awaitable[Any] | Any]


class Script:
    """Drives the `script` engine: `do(step, wid)` runs `step(ctx)` inside the run of Worker `wid` and waits until it
    has; `finish(wid)` lets the run return. A step that raises fails the run with its exception."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[Any, Any]] = {}
        self.writer: EntryWriter | None = None

    def _channel(self, wid: str) -> tuple[Any, Any]:
        channel = self._channels.get(wid)
        if channel is None:
            channel = self._channels[wid] = anyio.create_memory_object_stream[tuple[Step | None, anyio.Event]](16)
        return channel

    def close(self) -> None:
        for send, recv in self._channels.values():
            send.close()
            recv.close()

    def engine(self) -> type[Engine]:
        script = self

        class ScriptEngine(Engine):
            name = "script"

            async def run(self, ctx: RunContext) -> None:
                async for step, done in script._channel(ctx.worker_ref.worker_id)[1]:
                    try:
                        if step is None:
                            return
                        result = step(ctx)
                        if isinstance(result, Awaitable):
                            await result
                    finally:
                        done.set()

        return ScriptEngine

    async def send(self, step: Step | None, wid: str = "w1") -> anyio.Event:
        """Hand `step` to the run (None: return) without waiting for it; returns the event set once it has run."""
        done = anyio.Event()
        await self._channel(wid)[0].send((step, done))
        return done

    async def do(self, step: Step, wid: str = "w1") -> None:
        await (await self.send(step, wid)).wait()

    async def finish(self, wid: str = "w1") -> None:
        await self.send(None, wid)

    async def begin(self, wid: str = "w1", role: str = "assistant") -> EntryWriter:
        def step(ctx: RunContext) -> None:
            self.writer = ctx.begin_entry(role=role)

        await self.do(step, wid)
        assert self.writer is not None
        return self.writer


def _runtime(script: Script, **kw: Any) -> Runtime:
    return Runtime(
        runtime_id="rt-d",
        profiles={"script": ProfileConfig("script"), "timed": ProfileConfig("script", timeout_s=3600)},
        engines={"script": script.engine()},
        **kw,
    )


async def _worker(rt: Runtime, wid: str = "w1", profile: str = "script") -> str:
    await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": profile})
    return wid


@pytest.fixture
async def script() -> AsyncIterator[Script]:
    script = Script()
    yield script
    script.close()


@pytest.fixture
async def rt(script: Script) -> AsyncIterator[Runtime]:
    async with _runtime(script) as runtime:
        yield runtime


def _hub(rt: Runtime) -> DeltaHub:
    return rt._supervisor.hub


def _texts(deltas: list[OutputDelta]) -> list[tuple[int, str]]:
    return [(d.offset, d.text) for d in deltas]


NEWEST = 10**9  # an `upto` above every id: the stream has read the whole log


# --- deltas --------------------------------------------------------------------------------------------------


async def test_deltas_come_in_order_with_the_offsets_of_their_text(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    with rt.open_deltas() as sub:
        writer = await script.begin()
        assert sub.pending(NEWEST) == []  # begun, nothing written
        writer.write("Hel")
        first = sub.pending(NEWEST)
        writer.write("lo")
        writer.write("")  # ignored
        writer.write(", world")
        second = sub.pending(NEWEST)
        assert sub.pending(NEWEST) == []
    ref = WorkerRef(runtime_id="rt-d", worker_id=wid)
    assert first == [OutputDelta(worker_ref=ref, run_id=ack.run_id, sequence=1, offset=0, text="Hel")]
    assert second == [OutputDelta(worker_ref=ref, run_id=ack.run_id, sequence=1, offset=3, text="lo, world")]
    assert writer.sequence == 1 and writer.text == "Hello, world"
    assert writer.role == "assistant"


async def test_a_late_subscriber_gets_the_whole_text_so_far_first(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    early = rt.open_deltas(worker_id=wid)
    writer = await script.begin()
    writer.write("one ")
    assert _texts(early.pending(NEWEST)) == [(0, "one ")]
    writer.write("two ")
    late = rt.open_deltas(worker_id=wid)
    assert _texts(late.pending(NEWEST)) == [(0, "one two ")]  # the snapshot
    writer.write("three")
    assert _texts(late.pending(NEWEST)) == [(8, "three")]
    assert _texts(early.pending(NEWEST)) == [(4, "two three")]
    early.close()
    late.close()


async def test_an_entry_begun_after_the_stream_s_cursor_waits_for_the_cursor(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    begun_after = rt._journal.newest_id
    assert begun_after == ack.event_id
    with rt.open_deltas() as sub:
        writer = await script.begin()
        writer.write("not yet")
        assert sub.pending(begun_after - 1) == []  # the stream has not sent input_accepted yet
        writer.write(", now")
        assert _texts(sub.pending(begun_after)) == [(0, "not yet, now")]


async def test_a_stream_filtered_by_worker_waits_only_for_that_worker_s_events(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    other = await rt.create_worker(worker_id="other")  # a later event of another Worker
    assert other.last_event_id == ack.event_id + 1
    filtered, everything = rt.open_deltas(worker_id=wid), rt.open_deltas()
    writer = await script.begin()
    writer.write("text")
    assert _texts(filtered.pending(ack.event_id)) == [(0, "text")]  # it has sent every event of its Worker
    assert everything.pending(ack.event_id) == []  # it has not sent worker_created yet
    assert _texts(everything.pending(other.last_event_id)) == [(0, "text")]
    filtered.close()
    everything.close()


async def test_an_entry_being_committed_sends_nothing_to_a_stream_that_has_read_its_event(script: Script) -> None:
    store = FaultyStore()
    async with _runtime(script, store=store) as rt:
        wid = await _worker(rt)
        await rt.send_input(wid, "go")
        writer = await script.begin()
        writer.write("almost done")
        store.hold = True
        done = await script.send(lambda ctx: writer.end())
        try:
            await store.wait_held(1)
            commit_id = store.held[0].batch.event.id
            behind, ahead = rt.open_deltas(), rt.open_deltas()
            assert _texts(behind.pending(commit_id - 1)) == [(0, "almost done")]  # its frame is not read yet
            assert ahead.pending(commit_id) == []  # the stream has the transcript_appended frame: no delta after it
            assert wid in _hub(rt).entries  # not visible yet: still in the hub
            with pytest.raises(EntryInProgressError):
                writer.write("more")  # being committed
        finally:
            store.hold = False
            store.release_all()
        await done.wait()
        assert _hub(rt).entries == {}
        assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "almost done"]
        behind.close()
        ahead.close()


async def test_a_stalled_subscription_resumes_with_one_delta_that_completes_the_entry(
    rt: Runtime, script: Script
) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    pieces = ["é", "🙂", "a\u0301", "中文", "x" * 50, "\U0001f469\u200d\U0001f4bb", "end"] * 30
    with rt.open_deltas(worker_id=wid) as fast, rt.open_deltas(worker_id=wid) as stalled:
        writer = await script.begin()
        writer.write(pieces[0])
        received = stalled.pending(NEWEST)
        seen = fast.pending(NEWEST)
        for piece in pieces[1:]:
            writer.write(piece)
            seen += fast.pending(NEWEST)
        received += stalled.pending(NEWEST)
    whole = "".join(pieces)
    assert len(received) == 2  # the first piece, then one catch-up delta
    assert received[1].offset == len(pieces[0])
    assert received[0].text + received[1].text == whole
    assert len(seen) == len(pieces)
    rebuilt = ""
    for delta in seen:
        assert delta.offset == len(rebuilt)  # code points, not bytes
        rebuilt += delta.text
    assert rebuilt == whole == writer.text


async def test_filters_pick_the_worker_and_the_run(rt: Runtime, script: Script) -> None:
    a, b = await _worker(rt, "a"), await _worker(rt, "b")
    run_a = (await rt.send_input(a, "go")).run_id
    await rt.send_input(b, "go")
    writers = [await script.begin(a), await script.begin(b)]
    subs = {
        "all": rt.open_deltas(),
        "a": rt.open_deltas(worker_id=a),
        "a-run": rt.open_deltas(worker_id=a, run_id=run_a),
        "a-other-run": rt.open_deltas(worker_id=a, run_id="run-999"),
        "nobody": rt.open_deltas(worker_id="gone"),
    }
    for writer in writers:
        writer.write("text")
    got = {name: sorted(d.worker_ref.worker_id for d in sub.pending(NEWEST)) for name, sub in subs.items()}
    assert got == {"all": ["a", "b"], "a": ["a"], "a-run": ["a"], "a-other-run": [], "nobody": []}
    for sub in subs.values():
        sub.close()


async def test_open_deltas_refuses_bad_filters() -> None:
    async with Runtime() as rt:
        for kwargs, field in (
            ({"run_id": "run-1"}, "run_id"),
            ({"worker_id": "bad id"}, "worker_id"),
            ({"worker_id": "w", "run_id": "bad\n"}, "run_id"),
            ({"worker_id": 7}, "worker_id"),
        ):
            with pytest.raises(InvalidRequestError) as info:
                rt.open_deltas(**kwargs)
            assert info.value.details == {"field": field}
        assert rt._supervisor.hub.subscriptions == 0


async def test_open_deltas_needs_a_started_runtime() -> None:
    with pytest.raises(RuntimeUnavailableError):
        Runtime().open_deltas()


async def test_wait_returns_on_new_text_and_on_close(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    sub = rt.open_deltas(worker_id=wid)
    writer = await script.begin()
    assert sub.pending(NEWEST) == []
    woke: list[str] = []

    async def waiter() -> None:
        await sub.wait()
        woke.append(writer.text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # nothing new: it waits
        writer.write("hi")
    assert woke == ["hi"]
    await sub.wait()  # "hi" is pending: returns at once
    assert _texts(sub.pending(NEWEST)) == [(0, "hi")]
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.wait)
        await anyio.wait_all_tasks_blocked()
        sub.close()
    assert sub.pending(NEWEST) == []
    await sub.wait()  # closed: returns at once
    assert _hub(rt)._waiting == {}


async def test_wait_does_not_wake_for_another_worker_s_entry(rt: Runtime, script: Script) -> None:
    a, b = await _worker(rt, "a"), await _worker(rt, "b")
    await rt.send_input(a, "go")
    await rt.send_input(b, "go")
    wa, wb = await script.begin(a), await script.begin(b)
    sub = rt.open_deltas(worker_id=b)
    assert sub.pending(NEWEST) == []
    woke = anyio.Event()

    async def waiter() -> None:
        await sub.wait()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        wa.write("for a")
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        wb.write("for b")
    assert _texts(sub.pending(NEWEST)) == [(0, "for b")]
    sub.close()


async def test_wait_returns_on_a_durable_write_of_any_worker(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    sub = rt.open_deltas(worker_id=wid)
    await script.begin()
    assert sub.pending(NEWEST) == []
    woke: list[bool] = []

    async def waiter() -> None:
        await sub.wait()
        woke.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # no text, no write: it waits
        await rt.create_worker(worker_id="other")  # a durable write, of another Worker
    assert woke == [True]  # one waiter serves both: the stream reads the log next
    assert _hub(rt)._waiting == {}
    sub.close()


async def test_a_gated_entry_does_not_make_wait_return_at_once(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    sub = rt.open_deltas()
    writer = await script.begin()
    writer.write("gated")
    assert sub.pending(0) == []  # the stream has read nothing yet
    woke: list[bool] = []

    async def waiter() -> None:
        await sub.wait()
        woke.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # blocked: the stream moves its cursor on durable events, not on this entry
        tg.cancel_scope.cancel()
    assert _texts(sub.pending(NEWEST)) == [(0, "gated")]
    sub.close()


async def test_a_thousand_subscriptions_opened_and_closed_leave_nothing_behind(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")
    writer = await script.begin()
    writer.write("shared")
    hub = _hub(rt)
    entry = hub.entries[wid]
    for n in range(1000):
        sub = rt.open_deltas(worker_id=wid) if n % 2 else rt.open_deltas()
        assert _texts(sub.pending(NEWEST)) == [(0, "shared")]
        sub.close()
        sub.close()  # idempotent
    assert hub.subscriptions == 0
    assert entry.sent == {}
    assert hub._waiting == {}


async def test_an_ended_entry_leaves_the_hub_once_committed_and_is_the_transcript_s(
    rt: Runtime, script: Script
) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    sub = rt.open_deltas(worker_id=wid)
    writer = await script.begin()
    writer.write("whole ")
    writer.write("answer")
    sequences: list[int] = []

    async def end(ctx: RunContext) -> None:
        sequences.append(await writer.end())
        sequences.append(await writer.end())  # a second call: the same sequence, nothing appended

    await script.do(end)
    assert sequences == [1, 1]
    assert _hub(rt).entries == {}
    assert sub.pending(NEWEST) == []  # committed: forgotten
    await script.finish()
    run = await rt.wait_for_run(wid, ack.run_id)
    assert run.status == "completed"
    page = await rt.transcript(wid)
    assert [(e.sequence, e.role, e.content, e.data) for e in page.items] == [
        (0, "user", "go", None),
        (1, "assistant", "whole answer", None),
    ]
    events = (await rt.read_events(ack.event_id)).events
    assert [(e.kind, e.data.get("sequence")) for e in events] == [("transcript_appended", 1), ("run_completed", None)]
    assert page.items[1].event_id == events[0].id
    sub.close()


async def test_an_entry_is_written_with_the_async_with_block(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")

    async def block(ctx: RunContext) -> None:
        async with ctx.begin_entry(role="tool") as entry:
            entry.write("from a tool")
        entry_after = ctx.begin_entry()  # the block ended the first: another may begin
        entry_after.write("second")
        await entry_after.end()

    await script.do(block)
    await script.finish()
    await rt.wait_for_run(wid, ack.run_id)
    page = await rt.transcript(wid)
    assert [(e.role, e.content) for e in page.items[1:]] == [("tool", "from a tool"), ("assistant", "second")]


# --- one entry at a time -------------------------------------------------------------------------------------


async def test_a_second_entry_or_an_emit_while_one_is_open_is_refused(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    writer = await script.begin()
    writer.write("open")
    errors: list[BaseException] = []

    async def misuse(ctx: RunContext) -> None:
        for attempt in (lambda: ctx.begin_entry(), lambda: ctx.emit("whole")):
            try:
                result = attempt()
                if isinstance(result, Awaitable):
                    await result
            except EntryInProgressError as exc:
                errors.append(exc)

    await script.do(misuse)
    assert len(errors) == 2
    assert all(e.details == {"run_id": ack.run_id, "sequence": 1} for e in errors)  # type: ignore[attr-defined]
    assert (await rt.get_worker(wid)).transcript_len == 1  # nothing appended

    async def end_then_write(ctx: RunContext) -> None:
        await writer.end()
        with pytest.raises(EntryInProgressError):
            writer.write("late")
        with pytest.raises(TypeError):
            ctx.begin_entry().write(b"bytes")  # type: ignore[arg-type]

    await script.do(end_then_write)
    await script.finish()
    await rt.wait_for_run(wid, ack.run_id)
    assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "open"]  # the empty second was dropped


async def test_after_its_run_has_ended_a_context_begins_no_entry_and_a_dropped_one_does_not_end(
    rt: Runtime, script: Script
) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    kept: list[RunContext] = []
    empty = await script.begin()
    await script.do(kept.append)
    await script.finish()
    await rt.wait_for_run(wid, ack.run_id)
    with pytest.raises(InternalError, match="has ended"):
        kept[0].begin_entry()
    with pytest.raises(EntryInProgressError, match="dropped"):
        await empty.end()  # it had no text: dropped at the run's end, never committed
    assert _hub(rt).entries == {}
    assert (await rt.get_worker(wid)).transcript_len == 1


async def test_a_bad_role_is_refused_and_begins_nothing(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    await rt.send_input(wid, "go")

    async def bad(ctx: RunContext) -> None:
        with pytest.raises(ValueError, match="role"):
            ctx.begin_entry(role="narrator")
        await ctx.emit("still fine")

    await script.do(bad)
    assert _hub(rt).entries == {}
    assert (await rt.get_worker(wid)).transcript_len == 2


async def test_an_engine_that_lets_the_error_escape_fails_its_run_and_keeps_the_entry(
    rt: Runtime, script: Script
) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    writer = await script.begin()
    writer.write("kept")
    await script.send(lambda ctx: ctx.begin_entry())
    run = await rt.wait_for_run(wid, ack.run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.code == "internal_error"
    assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "kept"]


# --- the run ends with an entry open -------------------------------------------------------------------------


async def _ended_with_entry_open(
    script: Script, end: Callable[[Runtime, str, str], Awaitable[None]], *, profile: str = "script"
) -> tuple[Runtime, list[Any], list[str]]:
    """Begin an entry, write "partial", end the run by `end(rt, wid, run_id)`; returns the (closed) Runtime, the run's
    events after its input, and the transcript's contents."""
    rt = _runtime(script)
    await rt.start()
    try:
        wid = await _worker(rt, profile=profile)
        ack = await rt.send_input(wid, "go")
        sub = rt.open_deltas(worker_id=wid)
        writer = await script.begin()
        writer.write("par")
        writer.write("tial")
        assert _texts(sub.pending(NEWEST)) == [(0, "partial")]
        await end(rt, wid, ack.run_id)
        await rt.wait_for_run(wid, ack.run_id)
        contents = [e.content for e in (await rt.transcript(wid)).items]
        events = (await rt.read_events(ack.event_id)).events
        assert _hub(rt).entries == {}
        assert sub.pending(NEWEST) == []
        sub.close()
        with pytest.raises(EntryInProgressError):
            writer.write("after the end")
    finally:
        await rt.close()
    return rt, events, contents


@pytest.mark.parametrize(
    ("how", "status"),
    [("completed", "completed"), ("failed", "failed"), ("cancelled", "cancelled"), ("stopped", "cancelled")],
)
async def test_a_run_that_ends_with_an_entry_open_keeps_its_text_before_its_end(
    script: Script, how: str, status: str
) -> None:
    async def end(rt: Runtime, wid: str, run_id: str) -> None:
        if how == "completed":
            await script.finish()
        elif how == "failed":

            def boom(ctx: RunContext) -> None:
                raise RuntimeError("engine broke")

            await script.send(boom)
        elif how == "cancelled":
            await rt.cancel_worker(wid, run_id)
        else:
            await rt.stop_worker(wid)

    _, events, contents = await _ended_with_entry_open(script, end)
    assert contents == ["go", "partial"]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["transcript_appended", f"run_{status}"]
    assert kinds[2:] == (["worker_stopped"] if how == "stopped" else [])
    assert events[0].data == {"sequence": 1, "role": "assistant"}


async def test_a_timed_out_run_keeps_its_partial_entry(script: Script) -> None:
    async def end(rt: Runtime, wid: str, run_id: str) -> None:
        scope = rt._supervisor.active[wid].scope
        assert scope is not None
        scope.deadline = anyio.current_time()  # the profile's timeout passes now
        run = await rt.wait_for_run(wid, run_id)
        assert run.status == "timed_out"

    _, events, contents = await _ended_with_entry_open(script, end, profile="timed")
    assert contents == ["go", "partial"]
    assert [e.kind for e in events] == ["transcript_appended", "run_timed_out"]


async def test_a_run_interrupted_at_shutdown_keeps_its_partial_entry(script: Script) -> None:
    store = FaultyStore()  # outlives the Runtime: read what it holds after the close
    rt = _runtime(script, store=store)
    await rt.start()
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    writer = await script.begin()
    writer.write("partial")
    await rt.close()
    events = await store.read_events(ack.event_id, 10)
    assert [(e.kind, e.run_id) for e in events] == [
        ("runtime_stopping", None),
        ("transcript_appended", ack.run_id),
        ("run_interrupted", ack.run_id),
    ]
    assert [e.content for e in await store.read_transcript(wid, 0, 10)] == ["go", "partial"]
    assert _hub(rt).entries == {}


async def test_an_open_entry_with_no_text_is_dropped_at_the_run_s_end(rt: Runtime, script: Script) -> None:
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    await script.begin()
    await script.finish()
    run = await rt.wait_for_run(wid, ack.run_id)
    assert run.status == "completed"
    assert [e.kind for e in (await rt.read_events(ack.event_id)).events] == ["run_completed"]
    assert (await rt.get_worker(wid)).transcript_len == 1
    assert _hub(rt).entries == {}


# --- the store refuses the entry -----------------------------------------------------------------------------


async def test_a_refused_end_commits_nothing_and_the_run_s_end_commits_the_entry_once(script: Script) -> None:
    store = FaultyStore()
    async with _runtime(script, store=store) as rt:
        wid = await _worker(rt)
        ack = await rt.send_input(wid, "go")
        writer = await script.begin()
        writer.write("survives")
        seen: list[object] = []

        async def end(ctx: RunContext) -> None:
            store.fail_ids.add(rt._journal.newest_id + 1)
            try:
                await writer.end()
            except RuntimeUnavailableError as exc:
                seen.append(exc.code)
            seen.append((await rt.get_worker(wid)).transcript_len)
            seen.append(wid in _hub(rt).entries)
            raise RuntimeUnavailableError("the engine gives up")

        await script.send(end)
        run = await rt.wait_for_run(wid, ack.run_id)
        assert seen == ["runtime_unavailable", 1, True]  # nothing committed; its viewers still see it
        assert run.status == "failed"
        events = (await rt.read_events(ack.event_id)).events
        assert [e.kind for e in events] == ["transcript_appended", "run_failed"]
        assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "survives"]
        assert store.written == list(range(1, events[-1].id + 1))  # no id given twice, no gap
        assert _hub(rt).entries == {}


async def test_an_entry_the_store_refuses_at_the_run_s_end_is_retried_and_the_run_ends_once(script: Script) -> None:
    store = FaultyStore()
    async with _runtime(script, store=store) as rt:
        wid = await _worker(rt)
        ack = await rt.send_input(wid, "go")
        writer = await script.begin()
        writer.write("late but kept")
        store.hold = True
        await script.finish()
        await store.wait_held(1)  # the run's end writes the entry first
        first = store.held[0].batch
        store.failing = True
        store.hold = False
        for write in store.release_all():
            await write.done.wait()
        assert first.entry is not None and first.entry.content == "late but kept"
        assert store.refused == [first.event.id]
        assert (await rt.get_run(wid, ack.run_id)).status == "running"
        assert (await rt.get_worker(wid)).transcript_len == 1
        store.failing = False
        run = await rt.wait_for_run(wid, ack.run_id)
        assert run.status == "completed"
        events = (await rt.read_events(ack.event_id)).events
        assert [e.kind for e in events] == ["transcript_appended", "run_completed"]
        assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "late but kept"]


async def test_an_entry_the_store_refuses_at_shutdown_is_given_up_with_the_run(script: Script) -> None:
    store = FaultyStore()
    rt = _runtime(script, store=store)
    await rt.start()
    wid = await _worker(rt)
    ack = await rt.send_input(wid, "go")
    writer = await script.begin()
    writer.write("lost with the process")
    store.failing = True
    await rt.close()
    assert _hub(rt).entries == {}
    assert [e.kind for e in await store.read_events(ack.event_id, 10)] == []
    assert [e.content for e in await store.read_transcript(wid, 0, 10)] == ["go"]
    diagnostics = await rt.diagnostics()
    assert [d.code for d in diagnostics] == ["run_end_not_recorded"]


def test_a_subscription_is_a_context_manager() -> None:
    hub = DeltaHub()
    with hub.subscribe(None, None) as sub:
        assert isinstance(sub, DeltaSubscription)
        assert hub.subscriptions == 1
    assert sub.closed and hub.subscriptions == 0
