"""The process's settings: one Struct from flags, ``WORKER_RUNTIME_<NAME>`` variables and a TOML file.

Flags, variables and top-level file keys share one set of names (``--store-path``, ``WORKER_RUNTIME_STORE_PATH``,
``store_path``); the ``[limits]`` and ``[profiles.NAME]`` tables exist only in the file. Precedence: flag, then
environment variable, then file, then default. The token is one setting given one of three ways (``token``,
``token_env``, ``token_file``): the highest layer that gives any of them decides, and a layer that gives two is
an error. Every mistake is a `ConfigError` whose one-line message names the key and where it came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from worker_runtime_core import ConfigError, Limits, ProfileConfig, RuntimeId

__all__ = ["ENV_PREFIX", "SETTINGS", "LoadedConfig", "ServerConfig", "env_name", "flag_name", "load_config"]

ENV_PREFIX = "WORKER_RUNTIME_"
_TOKEN_KEYS = ("token", "token_env", "token_file")
_PATH_RE = re.compile(r" - at `\$\.([A-Za-z0-9_]+)(?:[.\[][^`]*)?`$")
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


class ServerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything ``worker-runtime-http serve`` can be told, in the shape of docs/configuration.md's file."""

    runtime_id: RuntimeId | None = None
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    store: Literal["memory", "fs"] = "fs"
    store_path: Annotated[str, msgspec.Meta(min_length=1)] = "./.worker-runtime"
    fsync: Literal["always", "batch", "never"] = "always"
    token: str | None = None
    token_env: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    token_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    insecure: bool = False
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    fsync_interval_ms: Annotated[int, msgspec.Meta(ge=1)] = 10
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = "text"
    default_profile: Annotated[str, msgspec.Meta(min_length=1)] = "default"
    limits: Limits = msgspec.field(default_factory=Limits)
    profiles: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'<hidden>' if name == 'token' and self.token is not None else repr(getattr(self, name))}"
            for name in self.__struct_fields__
            if name != "profiles"
        )
        return f"ServerConfig({shown}, profiles=[{', '.join(sorted(self.profiles))}])"

    def profile_configs(self) -> dict[str, ProfileConfig]:
        """The ``[profiles.NAME]`` tables as `ProfileConfig` (the engine checks its options when the Runtime is built).

        Raises:
            ConfigError: a table without ``engine`` or with a bad ``timeout_s`` (the message names the profile).
        """
        found: dict[str, ProfileConfig] = {}
        for name, table in self.profiles.items():
            try:
                found[name] = ProfileConfig.from_table(table)
            except ConfigError as exc:
                raise ConfigError(f"[profiles.{name}]: {exc.message.removeprefix('profile: ')}") from None
        return found


#: The settings that flags and environment variables can give (the tables cannot).
SETTINGS: tuple[str, ...] = tuple(n for n in ServerConfig.__struct_fields__ if n not in ("limits", "profiles"))
_LISTS = frozenset({"allowed_hosts"})
_BOOLS = frozenset(f.name for f in msgspec.structs.fields(ServerConfig) if f.type is bool)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def env_name(setting: str) -> str:
    """``store_path`` -> ``WORKER_RUNTIME_STORE_PATH``."""
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    """``store_path`` -> ``--store-path``."""
    return "--" + setting.replace("_", "-")


class LoadedConfig(msgspec.Struct, kw_only=True):
    """A `ServerConfig`, the resolved token and where each setting came from (for messages, never the token)."""

    config: ServerConfig
    token: str | None
    token_source: str | None
    sources: dict[str, str]
    file: str | None


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        msgspec.convert(table, ServerConfig)  # strict: a wrong type in the file is the file's error
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_explain(str(exc))}") from None
    except ConfigError as exc:  # raised by Limits: default_page above max_page
        raise ConfigError(f"{path}: {exc.message}") from None
    return table


def _explain(message: str) -> str:
    """msgspec's message, with the key spelled the way the file spells it."""
    unknown = re.fullmatch(r"Object contains unknown field `([^`]*)`(?: - at `\$\.?([^`]*)`)?", message)
    if unknown:
        field, where = unknown.group(1), unknown.group(2)
        key = f"{where}.{field}" if where else field
        return f"unknown key {key!r}"
    at = re.search(r" - at `\$\.?([^`]*)`$", message)
    if at:
        return f"key {at.group(1)!r}: {message[: at.start()]}"
    return message


def _layer_value(setting: str, value: Any, where: str) -> Any:
    """A flag's or variable's value as the setting takes it: a comma-separated list split, a yes/no word a bool.

    Raises:
        ConfigError: a boolean setting given a word that is none of the accepted ones (they are listed).
    """
    if setting in _LISTS and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if setting in _BOOLS and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(
            f"{where}: expected a boolean: true/false, 1/0, yes/no or on/off (any case), not {value[:50]!r}"
        )
    return value


def load_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Merge flags (None means not given), ``WORKER_RUNTIME_*`` variables and the TOML file over the defaults.

    `flags` maps setting names (``store_path``) and ``config`` to values. An empty environment variable counts
    as not set.

    Raises:
        ConfigError: a bad value, an unknown key, an unreadable file or token; the message names key and source.
    """
    env = os.environ if environ is None else environ
    config_file = flags.get("config") or env.get(env_name("config")) or None
    layers: list[tuple[str, dict[str, Any]]] = []  # lowest precedence first
    if config_file:
        table = _read_file(config_file)
        layers.append((config_file, table))
    env_layer = {s: _layer_value(s, env[env_name(s)], env_name(s)) for s in SETTINGS if env.get(env_name(s))}
    flag_layer = {s: _layer_value(s, flags[s], flag_name(s)) for s in SETTINGS if flags.get(s) is not None}
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    token_layer: tuple[str, dict[str, Any]] | None = None
    for where, layer in [*layers, ("env", env_layer), ("flag", flag_layer)]:
        for key, value in layer.items():
            if key in _TOKEN_KEYS:
                continue
            merged[key] = value
            sources[key] = _source(where, key)
        if any(layer.get(k) is not None for k in _TOKEN_KEYS):
            token_layer = (where, layer)
    if token_layer is not None:
        where, layer = token_layer
        given = [k for k in _TOKEN_KEYS if layer.get(k) is not None]
        if len(given) > 1:
            named = " and ".join(_source(where, k) for k in given)
            raise ConfigError(f"give the token one way only: {named} are both set")
        merged[given[0]] = layer[given[0]]
        sources[given[0]] = _source(where, given[0])
    try:
        config = msgspec.convert(merged, ServerConfig, strict=False)
    except msgspec.ValidationError as exc:
        match = _PATH_RE.search(str(exc))
        bad_key = match.group(1) if match else None
        origin = sources.get(bad_key, "the configuration") if bad_key else "the configuration"
        raise ConfigError(f"{origin}: {_explain(str(exc))}") from None
    except ConfigError as exc:
        raise ConfigError(f"{sources.get('limits', 'the configuration')}: {exc.message}") from None
    token, token_source = _resolve_token(config, sources, env)
    return LoadedConfig(config=config, token=token, token_source=token_source, sources=sources, file=config_file)


def _source(where: str, key: str) -> str:
    if where == "env":
        return env_name(key)
    if where == "flag":
        return flag_name(key)
    return f"{where} (key {key!r})"


def _resolve_token(
    config: ServerConfig, sources: Mapping[str, str], env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    token: str | None
    if config.token is not None:
        token, source = config.token, sources["token"]
    elif config.token_env is not None:
        source = f"the environment variable {config.token_env} (named by {sources['token_env']})"
        token = env.get(config.token_env, "")
        if not token:
            raise ConfigError(f"{source} is not set or empty")
    elif config.token_file is not None:
        source = f"the file {config.token_file} (named by {sources['token_file']})"
        try:
            token = Path(config.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the token from {source}: {reason}") from None
        if not token:
            raise ConfigError(f"the token from {source} is empty")
    else:
        return None, None
    if _TOKEN_RE.fullmatch(token) is None:
        raise ConfigError(f"the token from {source} must be visible ASCII characters with no spaces")
    return token, source
