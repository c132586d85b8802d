"""The `command` engine: stdin in, stdout streamed out, failures, bounds, and killing the process group on cancel."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from engine_helpers import FakeContext, follow_text

from worker_runtime_core import ConfigError, EngineError, ProfileConfig, Runtime
from worker_runtime_core.engines import CommandEngine, CommandOptions

PY = sys.executable
#: A linter in miniature: findings on stdout, a summary on stderr, then the exit status the input names.
FINDINGS = (
    "import sys; code = int(sys.stdin.read()); print(f'-:1:1: F401 found {code}'); "
    "sys.stderr.write('1 error'); exit(code)"
)
#: Much more stderr than a run's error keeps, bytes that are not UTF-8 among it, and a marker at its very end.
NOISY = "import sys; sys.stderr.buffer.write(b'\\xff\\xfe' + b'e' * 20000 + b'\\xff the end'); exit(2)"


def _gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _read_pid(fifo: Path) -> int:
    """Block (in a thread) until the child writes its pid into the FIFO."""
    return int((await anyio.to_thread.run_sync(fifo.read_text)).strip())


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pid.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
async def rt(fifo: Path) -> AsyncIterator[Runtime]:
    sleeper = f"import os,sys,time; open({str(fifo)!r},'w').write(str(os.getpid())); time.sleep(600)"
    # sh starts a grandchild, reports its pid, and waits: killing only sh would leave the sleeper behind
    family = f'{PY} -c "import time; time.sleep(600)" & echo $! > {fifo}; wait'
    async with Runtime(
        profiles={
            "upper": ProfileConfig("command", argv=[PY, "-c", "import sys; print(sys.stdin.read().upper(), end='')"]),
            "fail": ProfileConfig("command", argv=[PY, "-c", "import sys; sys.stderr.write('bad things'); exit(3)"]),
            "findings": ProfileConfig("command", argv=[PY, "-c", FINDINGS]),
            "linter": ProfileConfig("command", argv=[PY, "-c", FINDINGS], ok_exit_codes=[0, 1]),
            "noisy": ProfileConfig("command", argv=[PY, "-c", NOISY]),
            "quiet": ProfileConfig("command", argv=[PY, "-c", "pass"]),
            "chatty": ProfileConfig("command", argv=[PY, "-c", "print('x' * 5000)"], max_output_bytes=1000),
            "sleeper": ProfileConfig("command", argv=[PY, "-c", sleeper], kill_grace_s=5),
            "family": ProfileConfig("command", argv=["sh", "-c", family], kill_grace_s=5),
            "slow": ProfileConfig("command", argv=[PY, "-c", sleeper], timeout_s=0.2),
            "missing": ProfileConfig("command", argv=["/nonexistent/program"]),
            "stubborn": ProfileConfig(
                "command",
                argv=[
                    PY,
                    "-c",
                    "import os,signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    f"open({str(fifo)!r},'w').write(str(os.getpid())); time.sleep(600)",
                ],
                kill_grace_s=0.05,
            ),
        }
    ) as runtime:
        yield runtime


async def _run(rt: Runtime, profile: str, content: str = "hello") -> tuple[str, str]:
    await rt.create_worker(worker_id=profile, profile={"kind": "named", "name": profile})
    ack = await rt.send_input(profile, content)
    return profile, ack.run_id


async def test_stdout_becomes_the_assistant_entry(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "upper", "shout this")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "completed"
    assert (await rt.transcript(wid)).items[-1].content == "SHOUT THIS"


async def test_a_non_zero_exit_fails_the_run_with_stderr(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "fail")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.code == "command_failed"
    assert run.error.message == "exit status 3: bad things"
    assert (await rt.get_worker(wid)).transcript_len == 1  # no stdout: no empty entry


async def test_a_non_zero_exit_keeps_stdout_as_the_entry(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "findings", "1")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "failed" and run.error is not None
    assert (run.error.code, run.error.message) == ("command_failed", "exit status 1: 1 error")
    entry = (await rt.transcript(wid)).items[-1]
    assert (entry.sequence, entry.role, entry.run_id) == (1, "assistant", run_id)
    assert entry.content == "-:1:1: F401 found 1\n"


async def test_an_exit_code_in_ok_exit_codes_completes_the_run(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "linter", "1")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "completed" and run.error is None
    assert (await rt.transcript(wid)).items[-1].content == "-:1:1: F401 found 1\n"
    again = await rt.send_input(wid, "2")  # not in [0, 1]: fails, output kept
    run = await rt.wait_for_run(wid, again.run_id)
    assert run.status == "failed" and run.error is not None and run.error.message == "exit status 2: 1 error"
    assert [e.content for e in (await rt.transcript(wid, start=2)).items] == ["2", "-:1:1: F401 found 2\n"]


async def test_the_stderr_in_a_failed_runs_error_is_a_bounded_tail(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "noisy")
    run = await rt.wait_for_run(wid, run_id)
    assert run.error is not None and run.error.code == "command_failed"
    prefix, tail = run.error.message.split(": ", 1)
    assert prefix == "exit status 2" and len(tail) == 500
    assert tail.endswith("eee\ufffd the end")


async def test_empty_stdout_adds_no_entry(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "quiet")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "completed"
    assert (await rt.get_worker(wid)).transcript_len == 1


async def test_too_much_output_fails_the_run_and_keeps_the_output_up_to_the_bound(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "chatty")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "failed" and run.error is not None and run.error.code == "output_too_large"
    assert (await rt.transcript(wid)).items[-1].content == "x" * 1000


async def test_a_program_that_cannot_start_fails_the_run(rt: Runtime) -> None:
    wid, run_id = await _run(rt, "missing")
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "failed" and run.error is not None and run.error.code == "command_not_found"


async def test_cancel_kills_the_child_before_it_answers(rt: Runtime, fifo: Path) -> None:
    wid, run_id = await _run(rt, "sleeper")
    pid = await _read_pid(fifo)
    assert not _gone(pid)
    ack = await rt.cancel_worker(wid)
    assert ack.cancelled_run_id == run_id
    assert _gone(pid)
    assert (await rt.get_run(wid, run_id)).status == "cancelled"


async def test_cancel_kills_grandchildren_too(rt: Runtime, fifo: Path) -> None:
    wid, _ = await _run(rt, "family")
    grandchild = await _read_pid(fifo)
    pidfd = os.pidfd_open(grandchild)  # readable once the process has exited, whoever reaps it
    try:
        assert not _gone(grandchild)
        await rt.cancel_worker(wid)
        with anyio.fail_after(10):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    assert _gone(grandchild)


async def test_sigkill_follows_when_sigterm_is_ignored(rt: Runtime, fifo: Path) -> None:
    wid, run_id = await _run(rt, "stubborn")
    pid = await _read_pid(fifo)
    await rt.stop_worker(wid)
    assert _gone(pid)
    assert (await rt.get_run(wid, run_id)).status == "cancelled"


async def test_the_profile_timeout_kills_the_program_and_times_the_run_out(rt: Runtime, fifo: Path) -> None:
    wid, run_id = await _run(rt, "slow")
    pid = await _read_pid(fifo)
    run = await rt.wait_for_run(wid, run_id)
    assert run.status == "timed_out"
    assert _gone(pid)


def test_bad_command_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="argv"):
        Runtime(profiles={"x": ProfileConfig("command")})
    with pytest.raises(ConfigError, match="nope"):
        Runtime(profiles={"x": ProfileConfig("command", argv=["true"], nope=1)})
    with pytest.raises(ConfigError, match="unknown engine"):
        Runtime(profiles={"x": ProfileConfig("warp-drive")})
    Runtime(profiles={"x": ProfileConfig("command", argv=["true"], ok_exit_codes=[0, 1, 255])})
    for bad in ([], [-1], [256], ["1"], [True], 0):
        with pytest.raises(ConfigError, match=r"Expected .* at `\$\.ok_exit_codes"):
            Runtime(profiles={"x": ProfileConfig("command", argv=["true"], ok_exit_codes=bad)})


async def test_a_descendant_that_left_the_group_does_not_keep_the_run_alive(tmp_path: Path) -> None:
    """A grandchild started with `setsid` escapes the group kill and holds stdout open: the run still ends."""
    pid_file = tmp_path / "escaped.pid"
    # the sleeper writes its pid once it has its own session; the program waits for that, so it has escaped
    script = (
        f"setsid sh -c 'echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 120' & "
        f"while [ ! -s {pid_file} ]; do :; done; echo found it"
    )
    async with Runtime(profiles={"escape": ProfileConfig("command", argv=["sh", "-c", script])}) as rt:
        wid = (await rt.create_worker(profile={"kind": "named", "name": "escape"})).worker_ref.worker_id
        ack = await rt.send_input(wid, "go")
        try:
            run = await rt.wait_for_run(wid, ack.run_id, timeout=30)  # a bound for a hang, far below the sleep
        finally:
            escaped = int(pid_file.read_text())
            os.kill(escaped, 9)
        assert run.status == "completed"
        assert [e.content for e in (await rt.transcript(wid)).items] == ["go", "found it\n"]


# --- streaming: watched through a fake RunContext ---------------------------------------------------------------


def _engine(script: str, **options: object) -> CommandEngine:
    return CommandEngine(msgspec.convert({"argv": [PY, "-c", script], **options}, CommandOptions))


def _writes(*pieces: bytes, gate: Path) -> str:
    """A program that writes each piece to stdout as raw bytes, flushed, waiting for `gate` to be written between
    two pieces: the test sees each piece arrive before it lets the next one go."""
    steps = f" open({str(gate)!r}).read();".join(f" out.write({p!r}); out.flush();" for p in pieces)
    return f"import sys; out = sys.stdout.buffer; {steps}"


async def _release(gate: Path) -> None:
    await anyio.to_thread.run_sync(gate.write_text, "go")  # returns once the program has opened the FIFO


async def test_stdout_goes_into_the_entry_as_it_arrives_not_at_exit(fifo: Path) -> None:
    ctx = FakeContext("input")
    engine = _engine(_writes(b"first, no newline", b" then the rest\n", gate=fifo))
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, ctx)
        await ctx.wait_for(lambda c: c.text == "first, no newline")
        assert not ctx.entries[0].ended  # the program still runs: it waits for the gate
        await _release(fifo)
    (entry,) = ctx.entries
    assert entry.writes == ["first, no newline", " then the rest\n"]
    assert entry.ended and entry.role == "assistant"
    assert ctx.committed == [("assistant", "first, no newline then the rest\n")]


async def test_a_character_split_across_reads_is_never_mangled(fifo: Path) -> None:
    ctx = FakeContext()
    # é is c3 a9: its first byte arrives alone; ff is no UTF-8 at all; e2 82 is a character cut off by the exit
    engine = _engine(_writes(b"caf\xc3", b"\xa9 \xff \xe2\x82", gate=fifo))
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, ctx)
        await ctx.wait_for(lambda c: c.text == "caf")  # the lone c3 waits in the decoder
        await _release(fifo)
    (entry,) = ctx.entries
    assert entry.writes[0] == "caf"
    assert entry.text == "café \ufffd \ufffd" and entry.ended


async def test_cancel_mid_output_keeps_the_text_open_for_the_run_to_commit() -> None:
    ctx = FakeContext()
    engine = _engine("import os, sys, time; print(f'pid={os.getpid()};', end='', flush=True); time.sleep(600)")
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, ctx)
        await ctx.wait_for(lambda c: c.text.endswith(";"))
        tg.cancel_scope.cancel()
    (entry,) = ctx.entries
    pid = int(entry.text.removeprefix("pid=").removesuffix(";"))
    assert _gone(pid)
    assert not entry.ended and ctx.open is entry  # left open: the run's end commits it
    assert ctx.committed == []


async def test_a_program_killed_mid_output_keeps_its_text_and_fails_the_run() -> None:
    ctx = FakeContext()
    engine = _engine("import os, signal; print('half an answer', end='', flush=True); os.kill(os.getpid(), 9)")
    with pytest.raises(EngineError) as caught:
        await engine.run(ctx)
    assert (caught.value.code, caught.value.message) == ("command_failed", "exit status -9")
    assert ctx.committed == [("assistant", "half an answer")]


async def test_a_run_whose_program_is_killed_mid_output_fails_and_keeps_the_output() -> None:
    script = "import os; print('half an answer', end='', flush=True); os.kill(os.getpid(), 9)"
    async with Runtime(profiles={"killed": ProfileConfig("command", argv=[PY, "-c", script])}) as rt:
        wid, run_id = await _run(rt, "killed")
        run = await rt.wait_for_run(wid, run_id)
        items = (await rt.transcript(wid)).items
    assert run.status == "failed" and run.error is not None
    assert (run.error.code, run.error.message) == ("command_failed", "exit status -9")
    assert [(e.role, e.content, e.run_id) for e in items][1:] == [("assistant", "half an answer", run_id)]


async def test_output_past_the_bound_is_kept_up_to_it_and_fails_the_run() -> None:
    ctx = FakeContext()
    # 600 two-byte characters; the bound of 1001 bytes falls inside the 501st, which is dropped whole
    engine = _engine("import sys; sys.stdout.write('é' * 600)", max_output_bytes=1001)
    with pytest.raises(EngineError) as caught:
        await engine.run(ctx)
    assert caught.value.code == "output_too_large"
    assert "more than 1001 bytes" in caught.value.message
    assert ctx.committed == [("assistant", "é" * 500)]


async def test_output_exactly_at_the_bound_completes() -> None:
    ctx = FakeContext()
    await _engine("import sys; sys.stdout.write('x' * 1000)", max_output_bytes=1000).run(ctx)
    assert ctx.committed == [("assistant", "x" * 1000)]


async def test_no_stdout_begins_no_entry() -> None:
    ctx = FakeContext()
    await _engine("import sys; sys.stderr.write('only stderr')").run(ctx)
    assert ctx.entries == [] and ctx.committed == []


# --- streaming: through a Runtime's output deltas ---------------------------------------------------------------


def _profile(script: str, **options: object) -> dict[str, ProfileConfig]:
    return {"p": ProfileConfig("command", argv=[PY, "-c", script], **options)}


async def test_stdout_goes_out_as_deltas_while_the_program_runs(fifo: Path) -> None:
    async with Runtime(profiles=_profile(_writes(b"first", b" then more\n", gate=fifo))) as rt:
        wid = "p"
        await rt.create_worker(worker_id=wid, profile={"kind": "named", "name": "p"})
        with rt.open_deltas(worker_id=wid) as sub:
            ack = await rt.send_input(wid, "go")
            assert await follow_text(sub, lambda text: text == "first") == "first"
            assert (await rt.get_run(wid, ack.run_id)).status == "running"  # the program waits for the gate
            await _release(fifo)
            run = await rt.wait_for_run(wid, ack.run_id)
        items = (await rt.transcript(wid)).items
    assert run.status == "completed"
    assert [(e.role, e.content, e.run_id) for e in items][1:] == [("assistant", "first then more\n", ack.run_id)]


@pytest.mark.parametrize("end", ["cancel", "stop"])
async def test_a_run_cancelled_or_stopped_mid_output_keeps_what_the_program_wrote(end: str) -> None:
    script = "import time; print('partial output', end='', flush=True); time.sleep(600)"
    async with Runtime(profiles=_profile(script, kill_grace_s=5)) as rt:
        await rt.create_worker(worker_id="p", profile={"kind": "named", "name": "p"})
        with rt.open_deltas(worker_id="p") as sub:
            ack = await rt.send_input("p", "go")
            await follow_text(sub, lambda text: text == "partial output")
        await (rt.cancel_worker("p") if end == "cancel" else rt.stop_worker("p"))
        run = await rt.get_run("p", ack.run_id)
        items = (await rt.transcript("p")).items
    assert run.status == "cancelled"
    assert [(e.role, e.content, e.run_id) for e in items] == [
        ("user", "go", ack.run_id),
        ("assistant", "partial output", ack.run_id),
    ]
