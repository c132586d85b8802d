"""The `command` engine: runs a configured program per input, stdin in, stdout out as it arrives."""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
import msgspec
from anyio.abc import Process

from ..errors import EngineError
from .base import Engine, EntryWriter, RunContext

__all__ = ["CommandEngine", "CommandOptions"]

_STDERR_TAIL_CHARS = 500  # of stderr, in a failed run's error message
_STDERR_TAIL_BYTES = 4 * _STDERR_TAIL_CHARS  # enough bytes for that many characters of UTF-8
#: After the program exits, how long its pipes may still be read: what a descendant that escaped the process
#: group (and so the kill) writes later is not the run's.
_DRAIN_AFTER_EXIT_S = 1.0


class CommandOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of the `command` engine.

    Attributes:
        argv: the program and its arguments (no shell).
        cwd: working directory; the Runtime's when null.
        env: variables added to the Runtime's environment for the program.
        max_output_bytes: more stdout than this fails the run with ``output_too_large``; the entry keeps the
            first `max_output_bytes` (less a character the bound cuts).
        kill_grace_s: on cancel, seconds between SIGTERM and SIGKILL to the program's process group.
        ok_exit_codes: exit statuses that complete the run (a linter's 1, "found something", for one); any other
            fails it with ``command_failed``.
    """

    argv: Annotated[list[str], msgspec.Meta(min_length=1)]
    cwd: str | None = None
    env: dict[str, str] | None = None
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1_048_576
    kill_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    ok_exit_codes: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=255)]], msgspec.Meta(min_length=1)] = (
        msgspec.field(default_factory=lambda: [0])
    )


class CommandEngine(Engine):
    """Per input: start `argv` in a new session, write the input to stdin, and stream stdout into one
    ``assistant`` entry as it arrives (each read as it comes, decoded as UTF-8 incrementally, so a character split
    across reads is whole and undecodable bytes become U+FFFD; no entry when stdout is empty). An exit status
    outside `ok_exit_codes` keeps that entry and then fails the run with ``command_failed``, ``exit status N: <tail
    of stderr>``; a program that cannot start fails it with ``command_not_found``; more stdout than
    `max_output_bytes` kills the program, keeps the entry up to the bound and fails the run with
    ``output_too_large``. On cancel, stop or timeout the process group gets SIGTERM, then SIGKILL after
    `kill_grace_s`; the run ends only once the program is gone, and the entry keeps what was read (the run's end
    commits it). When the program exits, what is left of its process group is killed, so grandchildren never keep
    a run alive, and its pipes are read for at most a second more (a descendant that left the group may hold them).
    """

    name = "command"
    options_type = CommandOptions

    options: CommandOptions

    async def run(self, ctx: RunContext) -> None:
        opts = self.options
        env = {**os.environ, **opts.env} if opts.env else None
        try:
            # Shielded: the child runs before open_process returns (pipes are still being connected), so a cancel
            # landing here would abandon a live process. Once we hold it, the finally below always reaps it.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    opts.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=opts.cwd,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise EngineError("command_not_found", f"cannot start {opts.argv[0]!r}: {exc.strerror or exc}") from None
        err = bytearray()
        entry: EntryWriter | None = None  # begun with the first text: empty stdout makes no entry
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # keeps a character split across reads
        taken = 0  # bytes of stdout taken into the entry
        too_large = False

        def take(data: bytes, *, final: bool = False) -> None:
            nonlocal entry
            text = decoder.decode(data, final)
            if text:
                if entry is None:
                    entry = ctx.begin_entry()
                entry.write(text)

        async def feed() -> None:
            assert process.stdin is not None
            try:
                await process.stdin.send(ctx.content.encode())
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the program exited or closed stdin without reading it all
            finally:
                await process.stdin.aclose()

        async def read_out() -> None:
            # Each read goes out as it arrives, whatever it ends with: the entry grows while the program runs.
            nonlocal taken, too_large
            assert process.stdout is not None
            async for chunk in process.stdout:
                room = opts.max_output_bytes - taken
                if len(chunk) > room:
                    too_large = True
                    take(chunk[:room])  # up to the bound; a character the bound cuts stays in the decoder
                    taken = opts.max_output_bytes
                    _signal_group(process, signal.SIGKILL)
                    return
                taken += len(chunk)
                take(chunk)

        async def read_err() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                err.extend(chunk)
                del err[:-_STDERR_TAIL_BYTES]

        readers_done = 0
        drained = anyio.Event()

        async def read(reader: Callable[[], Awaitable[None]]) -> None:
            nonlocal readers_done
            try:
                await reader()
            finally:
                readers_done += 1
                if readers_done == 2:
                    drained.set()

        # On cancel, stop or timeout the entry stays open with what was read: the run's end commits it.
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                tg.start_soon(read, read_out)
                tg.start_soon(read, read_err)
                returncode = await process.wait()
                _signal_group(process, signal.SIGKILL)  # leftovers of the group; also closes their pipe ends
                # The run is bounded by the program, not by its pipes: a descendant that left the group (`setsid`)
                # may hold stdout open for ever. Take what is already written, then stop reading.
                with anyio.move_on_after(_DRAIN_AFTER_EXIT_S):
                    await drained.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await _terminate(process, opts.kill_grace_s)
        if not too_large:
            take(b"", final=True)  # an incomplete character at the very end becomes U+FFFD
        if entry is not None:  # kept on a failed exit too: a linter's findings are its output
            await entry.end()
        if too_large:
            raise EngineError(
                "output_too_large",
                f"the program wrote more than {opts.max_output_bytes} bytes; the entry keeps the first "
                f"{opts.max_output_bytes}",
            )
        if returncode not in opts.ok_exit_codes:
            tail = err.decode(errors="replace").strip()[-_STDERR_TAIL_CHARS:]
            raise EngineError("command_failed", f"exit status {returncode}" + (f": {tail}" if tail else ""))


def _signal_group(process: Process, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the program leads its own session, so its pgid is its pid
    except (ProcessLookupError, PermissionError):
        pass


async def _terminate(process: Process, grace_s: float) -> None:
    """SIGTERM the group, SIGKILL it after `grace_s`, and reap the program. Run shielded."""
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            await process.wait()
        if process.returncode is None:
            _signal_group(process, signal.SIGKILL)
            await process.wait()
    _signal_group(process, signal.SIGKILL)
    await process.aclose()
