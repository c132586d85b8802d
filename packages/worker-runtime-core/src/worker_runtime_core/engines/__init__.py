"""Engines: the protocol and the built-in `echo`, `command` and `openai` engines (the last needs the extra
``worker-runtime-core[openai]`` when a profile uses it)."""

from .base import Engine, EntryWriter, NoOptions, RunContext
from .command import CommandEngine, CommandOptions
from .echo import EchoEngine
from .openai import OpenAIEngine, OpenAIOptions
from .registry import BUILTIN_ENGINES, ENTRY_POINT_GROUP, discover_engines

__all__ = [
    "BUILTIN_ENGINES",
    "ENTRY_POINT_GROUP",
    "CommandEngine",
    "CommandOptions",
    "EchoEngine",
    "Engine",
    "EntryWriter",
    "NoOptions",
    "OpenAIEngine",
    "OpenAIOptions",
    "RunContext",
    "discover_engines",
]
