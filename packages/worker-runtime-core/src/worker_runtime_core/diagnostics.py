"""Diagnostics: what the Runtime reports about damage and failures, and which Workers answer `store_corrupt`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from .errors import StoreCorruptError
from .models import Diagnostic, WorkerRef
from .times import format_time, now

__all__ = ["MAX_DIAGNOSTICS", "Diagnostics", "corrupt_error"]

logger = logging.getLogger("worker_runtime_core")

#: How many diagnostics are kept (the newest).
MAX_DIAGNOSTICS = 1000


class Diagnostics:
    """The newest `MAX_DIAGNOSTICS` diagnostics, oldest first, and the damage of each corrupt Worker.

    Args:
        ref: the worker ref of a worker id (the Runtime's id is known only once started).
    """

    __slots__ = ("_ref", "corrupt", "entries")

    def __init__(self, ref: Callable[[str], WorkerRef]) -> None:
        self._ref = ref
        self.entries: deque[Diagnostic] = deque(maxlen=MAX_DIAGNOSTICS)
        #: worker id -> ``(path, offset)`` of its damage: that Worker answers `store_corrupt`.
        self.corrupt: dict[str, tuple[str, int]] = {}

    def restore(self, diagnostics: Iterable[Diagnostic], corrupt: Mapping[str, tuple[str, int]]) -> None:
        """Start from what the store reported when it opened."""
        self.corrupt = dict(corrupt)
        self.entries.extend(diagnostics)

    def diagnose(self, level: Literal["info", "warning", "error"], code: str, message: str, worker_id: str) -> None:
        """Report something about one Worker."""
        self.entries.append(
            Diagnostic(
                level=level,
                code=code,
                message=message,
                path=None,
                offset=None,
                worker_ref=self._ref(worker_id),
                created_at=format_time(now()),
            )
        )

    def mark_corrupt(self, worker_id: str, exc: StoreCorruptError) -> StoreCorruptError:
        """From now on this Worker answers `store_corrupt`; the rest of the Runtime goes on. Returns the error to
        raise: the path and offset in `details`, the store's own words only in the diagnostic."""
        path, offset = exc.details.get("path"), exc.details.get("offset")
        if worker_id in self.corrupt:
            return corrupt_error(worker_id, self.corrupt[worker_id])
        damage = self.corrupt[worker_id] = (str(path), int(offset) if isinstance(offset, int) else -1)
        self.entries.append(
            Diagnostic(
                level="error",
                code="store_corrupt",
                message=exc.message,
                path=str(path) if path is not None else None,
                offset=offset if isinstance(offset, int) else None,
                worker_ref=self._ref(worker_id),
                created_at=format_time(now()),
            )
        )
        return corrupt_error(worker_id, damage)

    def event_log_corrupt(self, exc: StoreCorruptError) -> StoreCorruptError:
        """The event log is damaged: log the store's words, report the damage once per damaged line, and return
        the error a reader gets (path and offset only)."""
        logger.error("the event log is corrupt: %s", exc.message)
        path, offset = exc.details.get("path"), exc.details.get("offset")
        path, offset = str(path) if path is not None else None, offset if isinstance(offset, int) else None
        if not any(d.code == "store_corrupt" and (d.path, d.offset) == (path, offset) for d in self.entries):
            self.entries.append(  # once per damaged line, however often it is read
                Diagnostic(
                    level="error",
                    code="store_corrupt",
                    message=exc.message,
                    path=path,
                    offset=offset,
                    worker_ref=None,
                    created_at=format_time(now()),
                )
            )
        return StoreCorruptError(
            "the store's event log is corrupt; the Runtime's log has the detail",
            details={"path": path, "offset": offset},
        )


def corrupt_error(worker_id: str, damage: tuple[str, int]) -> StoreCorruptError:
    """What a command on a corrupt Worker raises."""
    return StoreCorruptError(
        f"the store's data for worker {worker_id!r} is corrupt; the diagnostics name the damage",
        details={"path": damage[0], "offset": damage[1]},
    )
