"""RuntimePool: many runtimes by id, WorkerRef routing, config files and token sources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import respx
from client_helpers import body, input_ack, runtime_body, worker

from worker_runtime_client import RuntimeMismatchError, RuntimePool, UnknownRuntimeError, WorkerRef
from worker_runtime_core import ConfigError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_worker_refs_go_to_their_runtime(mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_EU_TOKEN", "eu-secret")
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-eu"))
    mock.get("http://us.test/v1/runtime").respond(200, json=runtime_body("rt-us"))
    eu = mock.post("http://eu.test/v1/workers/w1/input").respond(202, json=body(ack=input_ack()))
    us = mock.get("http://us.test/v1/workers/w1").respond(200, json=body(worker=worker()))
    pool = RuntimePool(
        {"rt-eu": {"base_url": "http://eu.test", "token_env": "RT_EU_TOKEN"}, "rt-us": {"base_url": "http://us.test"}}
    )
    async with pool:
        await pool.send_input(WorkerRef(runtime_id="rt-eu", worker_id="w1"), "hi")
        await pool.get_worker(WorkerRef(runtime_id="rt-us", worker_id="w1"))
        assert pool.client("rt-eu") is pool.client("rt-eu")  # one pooled client per runtime
        with pytest.raises(UnknownRuntimeError):
            await pool.get_worker(WorkerRef(runtime_id="rt-asia", worker_id="w1"))
    assert eu.calls.last.request.headers["authorization"] == "Bearer eu-secret"
    assert "authorization" not in us.calls.last.request.headers
    assert pool.runtime_ids == ["rt-eu", "rt-us"] and "secret" not in repr(pool)


async def test_a_runtime_answering_under_another_id_is_refused(mock: respx.MockRouter) -> None:
    mock.get("http://eu.test/v1/runtime").respond(200, json=runtime_body("rt-impostor"))
    command = mock.post("http://eu.test/v1/workers/w1/stop").respond(200)
    async with RuntimePool({"rt-eu": {"base_url": "http://eu.test"}}) as pool:
        with pytest.raises(RuntimeMismatchError):
            await pool.stop_worker(WorkerRef(runtime_id="rt-eu", worker_id="w1"))
    assert not command.called


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_pools_load_from_toml_and_json(tmp_path: Path, suffix: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-secret\n")
    runtimes = {
        "rt-1": {"base_url": "http://10.0.0.5:8787", "token_file": str(token_file)},
        "rt-2": {"base_url": "http://10.0.0.6:8787", "token": "inline"},
    }
    path = tmp_path / f"runtimes{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"runtimes": runtimes}))
    else:
        path.write_text(
            "".join(
                f"[runtimes.{rid}]\n" + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
                for rid, entry in runtimes.items()
            )
        )
    pool = RuntimePool.from_file(path)
    assert pool.runtime_ids == ["rt-1", "rt-2"]
    assert pool.client("rt-1")._headers["authorization"] == "Bearer file-secret"
    assert pool.client("rt-1").base_url == "http://10.0.0.5:8787"


def test_bad_pool_configs_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="NOPE_TOKEN"):
        RuntimePool({"rt-1": {"base_url": "http://x", "token_env": "NOPE_TOKEN"}})
    with pytest.raises(ConfigError, match="at most one"):
        RuntimePool({"rt-1": {"base_url": "http://x", "token": "a", "token_env": "B"}})
    with pytest.raises(ConfigError, match="invalid runtime id"):
        RuntimePool({"../rt": {"base_url": "http://x"}})
    with pytest.raises(ConfigError):
        RuntimePool({"rt-1": {"base_url": "http://x", "colour": "red"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtimes.rt-1]\nbase_url = 5\n")
    with pytest.raises(ConfigError, match=str(bad)):
        RuntimePool.from_file(bad)
