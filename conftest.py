"""Shared by every test: run async tests under asyncio and trio (anyio's plugin, auto mode)."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
