"""The `ask` engine: asks the Backend about every input and answers with what it was told (try requests for input
with curl, test them without an LLM)."""

from __future__ import annotations

from .base import Engine, InputAnswer, RunContext

__all__ = ["AskEngine"]


class AskEngine(Engine):
    """For every input, opens an ``approval`` request whose prompt is the input, then appends ``approved`` (or
    ``approved: <comment>`` when the answer carried content), ``refused``, or ``refused: timed out``. An input that
    starts with ``?`` opens a ``question`` instead (the rest of the input, stripped, is its prompt) and appends the
    answer's content (``timed out`` when none came). Needs no options."""

    name = "ask"

    # It parks while it waits (`park_for_input`): a run waiting for its answer holds no task and no coroutine.
    async def run(self, ctx: RunContext) -> None:
        content = ctx.content
        if content.startswith("?"):
            await ctx.park_for_input("question", content[1:].strip() or content)
        else:
            await ctx.park_for_input("approval", content)

    async def resume(self, ctx: RunContext, answer: InputAnswer) -> None:
        if ctx.content.startswith("?"):
            await ctx.emit(answer.content if answer.content is not None else "timed out")
        elif answer.outcome == "timed_out":
            await ctx.emit("refused: timed out")
        elif answer.approved:
            await ctx.emit(f"approved: {answer.content}" if answer.content else "approved")
        else:
            await ctx.emit("refused")
