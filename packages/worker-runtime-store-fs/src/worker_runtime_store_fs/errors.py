"""Errors of the FS store. All are `ConfigError`s of core: the store cannot be opened as configured."""

from __future__ import annotations

from worker_runtime_core import ConfigError

__all__ = ["StoreFormatError", "StoreLockedError", "StoreUnwritableError"]


class StoreLockedError(ConfigError):
    """Another process holds the store's lock file; one process owns a store."""


class StoreFormatError(ConfigError):
    """The store's runtime record is unreadable, of a newer format, or belongs to another runtime id."""


class StoreUnwritableError(ConfigError):
    """A directory of the store cannot be written (a read-only mount, no permission); `details.path` names it."""
