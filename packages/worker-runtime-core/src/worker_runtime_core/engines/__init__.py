"""Engines: the protocol and the built-in `echo` and `command` engines."""

from .base import Engine, NoOptions, RunContext
from .command import CommandEngine, CommandOptions
from .echo import EchoEngine
from .registry import BUILTIN_ENGINES, ENTRY_POINT_GROUP, discover_engines

__all__ = [
    "BUILTIN_ENGINES",
    "ENTRY_POINT_GROUP",
    "CommandEngine",
    "CommandOptions",
    "EchoEngine",
    "Engine",
    "NoOptions",
    "RunContext",
    "discover_engines",
]
