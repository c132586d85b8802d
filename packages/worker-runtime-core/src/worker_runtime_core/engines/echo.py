"""The `echo` engine: answers each input with the input itself."""

from __future__ import annotations

from .base import Engine, RunContext

__all__ = ["EchoEngine"]


class EchoEngine(Engine):
    """Appends one ``assistant`` entry whose content is the input's content. Needs no options."""

    name = "echo"

    async def run(self, ctx: RunContext) -> None:
        await ctx.emit(ctx.content)
