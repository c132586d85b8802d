"""Finding engine classes: the built-in ones and those registered under the ``worker_runtime.engines`` entry
point group (the entry point's value is an `Engine` subclass).

The `openai` engine is built in but its SDK is an extra: its module imports the SDK only when a profile naming it
is built, so the name is always known and core without the extra still imports."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from ..errors import ConfigError
from .ask import AskEngine
from .base import Engine
from .command import CommandEngine
from .echo import EchoEngine
from .openai import OpenAIEngine

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_ENGINES", "discover_engines"]

ENTRY_POINT_GROUP = "worker_runtime.engines"
BUILTIN_ENGINES: Mapping[str, type[Engine]] = {
    "echo": EchoEngine,
    "ask": AskEngine,
    "command": CommandEngine,
    "openai": OpenAIEngine,
}


def discover_engines(extra: Mapping[str, type[Engine]] | None = None) -> dict[str, type[Engine]]:
    """Built-in engines, then entry-point engines, then `extra`; a later name does not replace a built-in.

    Raises:
        ConfigError: an entry point fails to load or is not an `Engine` subclass.
    """
    engines: dict[str, type[Engine]] = dict(BUILTIN_ENGINES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in engines:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin is a configuration problem, named as such
            raise ConfigError(f"engine entry point {ep.name!r} ({ep.value}) failed to load: {exc!r}") from exc
        engines[ep.name] = _check(ep.name, cls)
    for name, cls in (extra or {}).items():
        if name in BUILTIN_ENGINES:
            raise ConfigError(f"engine name {name!r} is taken by a built-in engine")
        engines[name] = _check(name, cls)
    return engines


def _check(name: str, cls: object) -> type[Engine]:
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ConfigError(f"engine {name!r} is not an Engine subclass: {cls!r}")
    return cls
