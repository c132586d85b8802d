"""The public face: `__all__` names exactly the public members, and they all exist."""

from __future__ import annotations

import worker_runtime_http


def test_all_lists_the_public_names() -> None:
    public = {n for n in dir(worker_runtime_http) if not n.startswith("_")} - {
        "app", "auth", "cli", "config", "errors", "openapi", "routes", "stream",
    }  # fmt: skip
    assert set(worker_runtime_http.__all__) == public | {"__version__"}


def test_every_name_exists() -> None:
    for name in worker_runtime_http.__all__:
        assert getattr(worker_runtime_http, name) is not None


def test_the_version_is_0_1_0() -> None:
    assert worker_runtime_http.__version__ == "0.2.0"
