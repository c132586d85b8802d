"""Where everything lives under a store's root. Only validated ids become path parts.

::

    <root>/
      LOCK                          flock'ed by the owning process
      runtime.json                  format_version, runtime_id, display_name, created_at
      checkpoint.json               the event id up to which projections are on disk
      input_keys.jsonl              the input keys alive at the checkpoint
      events/<first id>.jsonl       the event log (write-ahead log), in segments named by their first event id;
                                    every line of a log is <json>\t<crc32, 8 hex digits>\n
      events/<first id>.idx         its offset index
      index/<worker_id>.idx         the ids of the events naming each Worker (kept when the Worker is deleted)
      workers/<worker_id>/
        worker.json                 the Worker as created
        state.json                  the Worker's state at the checkpoint (none while unchanged since created)
        transcript.jsonl            its transcript
        transcript.idx              the transcript's offset index
        runs.jsonl, runs.idx        its finished runs
        queued.json                 the content of its queued inputs at the checkpoint, by run id (none while
                                    nothing is queued)
"""

from __future__ import annotations

from pathlib import Path

from worker_runtime_core import is_valid_id

__all__ = ["FORMAT_VERSION", "Layout"]

#: Written into runtime.json; a store of a newer format is refused, one of version 1 (log lines without a
#: checksum) is upgraded at open.
FORMAT_VERSION = 2


class Layout:
    """Paths of one store root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.lock = self.root / "LOCK"
        self.runtime_record = self.root / "runtime.json"
        self.checkpoint = self.root / "checkpoint.json"
        self.input_keys = self.root / "input_keys.jsonl"
        self.events = self.root / "events"
        self.index = self.root / "index"
        self.workers = self.root / "workers"

    def worker_dir(self, worker_id: str) -> Path:
        """The directory of a Worker. Raises ValueError for an id that is not valid (never a path outside)."""
        if not is_valid_id(worker_id):
            raise ValueError(f"invalid worker id {worker_id!r}")
        return self.workers / worker_id

    def worker_index(self, worker_id: str) -> Path:
        if not is_valid_id(worker_id):
            raise ValueError(f"invalid worker id {worker_id!r}")
        return self.index / f"{worker_id}.idx"

    def segment(self, first_id: int) -> tuple[Path, Path]:
        """Data and index paths of the event-log segment that starts at `first_id`."""
        name = f"{first_id:020d}"
        return self.events / f"{name}.jsonl", self.events / f"{name}.idx"

    def segments(self) -> list[int]:
        """First ids of the existing segments, oldest first."""
        if not self.events.is_dir():
            return []
        firsts = []
        for path in self.events.glob("*.jsonl"):
            if len(path.stem) == 20 and path.stem.isascii() and path.stem.isdigit():
                firsts.append(int(path.stem))
        return sorted(firsts)
