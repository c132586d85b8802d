"""The command line, in process: help, refusals in one line, the openapi command."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_runtime_http import ServerConfig
from worker_runtime_http.cli import UVICORN_OPTIONS, app_allowed_hosts, main
from worker_runtime_http.openapi import openapi_bytes


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("worker-runtime-http: error: ")
    return lines[0]


def test_serve_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--host", "--port", "--runtime-id", "--display-name", "--store", "--store-path", "--fsync", "--token",
        "--token-env", "--token-file", "--config", "--log-level", "--log-format", "--insecure", "--allowed-hosts",
        "--shutdown-grace-s", "--fsync-interval-ms", "--default-profile",
    ):  # fmt: skip
        assert flag in out, flag
    assert "WORKER_RUNTIME_STORE_PATH" in out


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_public_bind_without_a_token_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv("WORKER_RUNTIME_TOKEN", raising=False)
    assert main(["serve", "--store", "memory", "--host", host]) == 2
    line = one_error_line(capsys)
    assert f"refusing to listen on {host}" in line
    assert "--insecure" in line


def test_a_config_mistake_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("[limits]\nmax_page = -1\n")
    assert main(["serve", "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert str(config) in line and "limits.max_page" in line


def test_an_unknown_engine_in_a_profile_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text('store = "memory"\n[profiles.x]\nengine = "warp"\n')
    assert main(["serve", "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert str(config) in line and "warp" in line


@pytest.mark.parametrize("inside", [False, True])
def test_a_store_path_that_is_a_file_is_a_config_error_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, inside: bool
) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    store_path = file / "store" if inside else file
    assert main(["serve", "--port", "0", "--store-path", str(store_path)]) == 2
    line = one_error_line(capsys)
    assert f"--store-path: store_path {store_path} " in line
    assert line.endswith(f"{file}, which is a file, not a directory" if inside else "is a file, not a directory")
    assert file.read_text() == "x"


def test_the_openapi_command_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    assert capsys.readouterr().out.encode() == openapi_bytes()


def test_the_openapi_check_fails_on_a_stale_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    target.write_text("{}")
    assert main(["openapi", "--output", str(target), "--check"]) == 1
    assert "hatch run openapi" in one_error_line(capsys)
    assert main(["openapi", "--output", str(target)]) == 0
    assert main(["openapi", "--output", str(target), "--check"]) == 0


def test_serve_runs_uvicorn_with_the_c_parser_and_no_server_header() -> None:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    config = Config(app, **UVICORN_OPTIONS)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    assert not config.server_header


@pytest.mark.parametrize(
    ("host", "allowed", "given"),
    [
        ("127.0.0.1", [], []),  # the app accepts the bound address's loopback names
        ("::1", [], []),
        ("0.0.0.0", [], ["*"]),  # a public bind without allowed_hosts: Host is not checked, the token guards it
        ("10.1.2.3", [], ["*"]),
        ("0.0.0.0", ["runtime.internal"], ["runtime.internal"]),
        ("127.0.0.1", ["box.local:8787"], ["box.local:8787"]),
    ],
)
def test_serve_gives_the_app_the_hosts_that_match_its_bind(host: str, allowed: list[str], given: list[str]) -> None:
    assert app_allowed_hosts(ServerConfig(host=host, allowed_hosts=allowed)) == given


async def test_the_fs_store_follows_the_limits_tables_retention_and_key_ttl(tmp_path: Path) -> None:
    from worker_runtime_core import Limits
    from worker_runtime_http.cli import _runtime
    from worker_runtime_store_fs import FsRuntimeStore

    config = ServerConfig(store="fs", store_path=str(tmp_path), limits=Limits(event_retention=7, idempotency_ttl_s=120))
    async with _runtime(config, None) as rt:
        store = rt._store
        assert isinstance(store, FsRuntimeStore)
        assert (store.event_retention, store.idempotency_ttl_s) == (7, 120)
