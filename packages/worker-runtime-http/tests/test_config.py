"""Settings: flag > WORKER_RUNTIME_* > TOML file > default, the documented file shape, one clear error per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker_runtime_core import ConfigError, Limits
from worker_runtime_http.config import SETTINGS, ServerConfig, env_name, flag_name, load_config

EXAMPLE_FILE = """\
runtime_id = "rt-eu-1"
display_name = "EU workers"
host = "127.0.0.1"
port = 8787
store = "fs"
store_path = "./.worker-runtime"
fsync = "always"
token_file = "{token_file}"
insecure = false
allowed_hosts = []
shutdown_grace_s = 10
fsync_interval_ms = 10
log_level = "info"
log_format = "text"
default_profile = "default"

[limits]
default_page = 100
max_page = 1000
max_body_bytes = 1048576
max_input_bytes = 262144
max_wait_s = 30
max_workers = 100000
operation_timeout_s = 10
idempotency_ttl_s = 86400
event_retention = 0

[profiles.default]
engine = "echo"

[profiles.lint]
engine = "command"
argv = ["ruff", "check", "-"]
timeout_s = 60
"""


def write(tmp_path: Path, text: str, name: str = "runtime.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Any:
    return load_config(flags or {}, env or {})


def test_the_defaults_are_the_documented_ones() -> None:
    config = load().config
    assert (config.host, config.port, config.store, config.store_path) == ("127.0.0.1", 8787, "fs", "./.worker-runtime")
    assert config.fsync == "always"
    assert config.runtime_id is None
    assert config.shutdown_grace_s == 10
    assert config.limits == Limits()


def test_the_documented_example_file_loads(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    path = write(tmp_path, EXAMPLE_FILE.format(token_file=token_file))
    loaded = load({"config": path})
    assert loaded.config.runtime_id == "rt-eu-1"
    assert loaded.token == "tok-from-file"
    assert loaded.config.limits == Limits()
    profiles = loaded.config.profile_configs()
    assert profiles["lint"].engine == "command"
    assert profiles["lint"].timeout_s == 60
    assert profiles["lint"].options == {"argv": ["ruff", "check", "-"]}


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1000\ndisplay_name = "file"\nstore = "memory"\n')
    loaded = load({"config": path, "port": "3000"}, {env_name("port"): "2000", env_name("display_name"): "env"})
    assert loaded.config.port == 3000
    assert loaded.config.display_name == "env"
    assert loaded.config.store == "memory"
    assert loaded.sources["port"] == "--port"
    assert loaded.sources["display_name"] == "WORKER_RUNTIME_DISPLAY_NAME"


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 1234\n")
    assert load(env={env_name("config"): path}).config.port == 1234


@pytest.mark.parametrize(
    ("word", "value"),
    [(w, True) for w in ("true", "True", "1", "yes", "YES", "on", " On ")]
    + [(w, False) for w in ("false", "FALSE", "0", "no", "No", "off", "OFF")],
)
def test_a_boolean_variable_takes_the_usual_spellings(word: str, value: bool) -> None:
    assert load(env={env_name("insecure"): word}).config.insecure is value


@pytest.mark.parametrize("word", ["maybe", "y", "2", "truee"])
def test_a_boolean_variable_that_is_no_boolean_lists_the_accepted_values(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={env_name("insecure"): word})
    message = info.value.message
    assert message.startswith("WORKER_RUNTIME_INSECURE: ")
    assert "true/false, 1/0, yes/no or on/off" in message and repr(word) in message


def test_environment_values_are_converted(tmp_path: Path) -> None:
    env = {
        env_name("insecure"): "true",
        env_name("shutdown_grace_s"): "2.5",
        env_name("allowed_hosts"): "a.internal, b.internal:8787",
    }
    config = load(env=env).config
    assert config.insecure is True
    assert config.shutdown_grace_s == 2.5
    assert config.allowed_hosts == ["a.internal", "b.internal:8787"]


def test_an_empty_environment_variable_counts_as_unset() -> None:
    assert load(env={env_name("port"): ""}).config.port == 8787


def test_every_setting_has_a_flag_and_a_variable() -> None:
    for setting in SETTINGS:
        assert flag_name(setting).startswith("--")
        assert env_name(setting) == "WORKER_RUNTIME_" + setting.upper()
    assert set(SETTINGS) | {"limits", "profiles"} == set(ServerConfig.__struct_fields__)


def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "prot = 8787\n")
    with pytest.raises(ConfigError) as caught:
        load({"config": path})
    assert path in caught.value.message
    assert "'prot'" in caught.value.message


def test_an_unknown_limit_names_the_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_pages = 5\n")
    with pytest.raises(ConfigError) as caught:
        load({"config": path})
    assert "limits.max_pages" in caught.value.message
    assert path in caught.value.message


def test_a_wrong_type_in_the_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "8787"\n')
    with pytest.raises(ConfigError) as caught:
        load({"config": path})
    message = caught.value.message
    assert path in message and "'port'" in message and "int" in message
    assert "\n" not in message


def test_a_limit_out_of_range_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_page = 0\n")
    with pytest.raises(ConfigError, match=r"limits\.max_page"):
        load({"config": path})


def test_default_page_above_max_page_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\ndefault_page = 50\nmax_page = 10\n")
    with pytest.raises(ConfigError, match="default_page"):
        load({"config": path})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load({"config": path})


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load({"config": str(tmp_path / "missing.toml")})


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={env_name("port"): "eighty"})
    assert caught.value.message.startswith("WORKER_RUNTIME_PORT: key 'port'")


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"store": "disk"})
    assert caught.value.message.startswith("--store:")


def test_a_bad_runtime_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="runtime_id"):
        load({"runtime_id": "../etc"})


def test_two_token_sources_in_one_layer_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'token = "a"\ntoken_env = "B"\n')
    with pytest.raises(ConfigError, match="one way only"):
        load({"config": path})


def test_a_higher_layer_s_token_source_replaces_the_file_s(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    path = write(tmp_path, f'token_file = "{token_file}"\n')
    loaded = load({"config": path}, {env_name("token_env"): "MY_TOKEN", "MY_TOKEN": "from-env"})
    assert loaded.token == "from-env"
    assert loaded.config.token_file is None
    assert "MY_TOKEN" in (loaded.token_source or "")


def test_a_token_env_that_is_unset_is_an_error() -> None:
    with pytest.raises(ConfigError, match="NOT_THERE"):
        load({"token_env": "NOT_THERE"})


def test_an_unreadable_or_empty_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the token"):
        load({"token_file": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load({"token_file": str(empty)})


def test_a_token_with_spaces_is_refused() -> None:
    with pytest.raises(ConfigError, match="visible ASCII"):
        load({"token": "two words"})


def test_the_token_is_never_in_the_repr_nor_in_errors() -> None:
    loaded = load({"token": "sup3r-secret"})
    assert "sup3r-secret" not in repr(loaded.config)
    with pytest.raises(ConfigError) as caught:
        load({"token": "sup3r secret"})
    assert "sup3r" not in caught.value.message


def test_a_profile_without_an_engine_names_the_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "[profiles.lint]\nargv = []\n")
    config = load({"config": path}).config
    with pytest.raises(ConfigError, match=r"\[profiles\.lint\]"):
        config.profile_configs()
