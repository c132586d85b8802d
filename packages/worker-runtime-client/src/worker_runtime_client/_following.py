"""`Following`: the async iterator and async context manager around one async generator that follows a runtime
(`RunFollower`, `RequestInbox`): leaving the context, or `aclose`, closes the generator and with it its stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Generic, Self, TypeVar

__all__ = ["Following"]

T = TypeVar("T")


class Following(Generic[T]):
    """Iterates `_items` (set by the subclass's ``__init__``); a context manager that closes it on exit."""

    _items: AsyncGenerator[T, None]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self._items.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following and close the stream. Idempotent."""
        await self._items.aclose()
