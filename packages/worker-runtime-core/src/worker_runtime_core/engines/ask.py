"""The `ask` engine: asks the Backend about every input and answers with what it was told (try requests for input
with curl, test them without an LLM)."""

from __future__ import annotations

from .base import Engine, RunContext

__all__ = ["AskEngine"]


class AskEngine(Engine):
    """For every input, opens an ``approval`` request whose prompt is the input, then appends ``approved`` (or
    ``approved: <comment>`` when the answer carried content), ``refused``, or ``refused: timed out``. An input that
    starts with ``?`` opens a ``question`` instead (the rest of the input, stripped, is its prompt) and appends the
    answer's content (``timed out`` when none came). Needs no options."""

    name = "ask"

    async def run(self, ctx: RunContext) -> None:
        content = ctx.content
        if content.startswith("?"):
            answer = await ctx.request_input("question", content[1:].strip() or content)
            await ctx.emit(answer.content if answer.content is not None else "timed out")
            return
        answer = await ctx.request_input("approval", content)
        if answer.outcome == "timed_out":
            await ctx.emit("refused: timed out")
        elif answer.approved:
            await ctx.emit(f"approved: {answer.content}" if answer.content else "approved")
        else:
            await ctx.emit("refused")
