"""Fixtures of the core tests: a Runtime with a `gate` engine (see core_helpers.Gate)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from core_helpers import Gate

from worker_runtime_core import ProfileConfig, Runtime


@pytest.fixture
async def gate() -> Gate:
    return Gate()


@pytest.fixture
async def rt(gate: Gate) -> AsyncIterator[Runtime]:
    async with Runtime(
        runtime_id="rt-test",
        display_name="Test",
        profiles={"gate": ProfileConfig("gate"), "slow": ProfileConfig("gate", timeout_s=0.05)},
        engines={"gate": gate.engine()},
    ) as runtime:
        yield runtime
