"""Engines: the protocol and the built-in `echo`, `ask`, `command` and `openai` engines (the last needs the extra
``worker-runtime-core[openai]`` when a profile uses it)."""

from .ask import AskEngine
from .base import Engine, EntryWriter, InputAnswer, NoOptions, RunContext
from .command import CommandEngine, CommandOptions
from .echo import EchoEngine
from .openai import OpenAIEngine, OpenAIOptions
from .registry import BUILTIN_ENGINES, ENTRY_POINT_GROUP, discover_engines

__all__ = [
    "BUILTIN_ENGINES",
    "ENTRY_POINT_GROUP",
    "AskEngine",
    "CommandEngine",
    "CommandOptions",
    "EchoEngine",
    "Engine",
    "EntryWriter",
    "InputAnswer",
    "NoOptions",
    "OpenAIEngine",
    "OpenAIOptions",
    "RunContext",
    "discover_engines",
]
