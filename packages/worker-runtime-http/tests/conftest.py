"""Fixtures of the HTTP tests: a started Runtime with the `gate` profile, its app, and a client with the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from http_helpers import Gate, serving

from worker_runtime_core import Runtime


@pytest.fixture
async def gate() -> Gate:
    return Gate()


@pytest.fixture
async def served(gate: Gate) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with serving(gate) as pair:
        yield pair


@pytest.fixture
async def rt(served: tuple[Runtime, httpx.AsyncClient]) -> Runtime:
    return served[0]


@pytest.fixture
async def client(served: tuple[Runtime, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]
