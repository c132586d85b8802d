"""Recovery at open: load Worker states, repair torn tails, replay the event log after the last checkpoint.

Start-up reads each Worker's small state record and the log lines after the checkpoint; it never reads whole
transcripts or the whole event log. What it repairs or cannot read becomes a diagnostic; a Worker whose record
or transcript is damaged is reported as corrupt and the rest of the Runtime starts.
"""

from __future__ import annotations

import os

import msgspec

from worker_runtime_core import Diagnostic, WorkerRef, is_valid_id
from worker_runtime_core.records import InputKeyRecord, WorkerRecord
from worker_runtime_core.times import format_time, now

from . import _fileops as fileops
from .eventlog import EventLog
from .layout import Layout
from .lines import CheckpointRecord, EventLine, WalLineIn, decode_wal, encode
from .logs import IdIndex, Repair, frame, unframe
from .projections import Known, Projections, run_number
from .records import RecordCorrupt, read_record

__all__ = ["Loaded", "load"]

_WORKER_DECODER = msgspec.json.Decoder(WorkerRecord)
_KEY_DECODER = msgspec.json.Decoder(InputKeyRecord)
_EVENT_LINE_DECODER = msgspec.json.Decoder(EventLine)
_QUEUED_DECODER = msgspec.json.Decoder(dict[str, str])


class Loaded:
    """What recovery found."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerRecord] = {}
        self.keys: dict[tuple[str, str], InputKeyRecord] = {}
        self.diagnostics: list[Diagnostic] = []
        self.corrupt: dict[str, tuple[str, int]] = {}
        self.checkpoint_id = 0
        self.dirty: dict[str, bytes] = {}
        self.replayed = 0
        #: The content of each Worker's queued inputs by run id (its queued.json, then the log), and the Workers
        #: whose queued.json the next checkpoint rewrites.
        self.queued: dict[str, dict[str, str]] = {}
        self.queued_dirty: set[str] = set()


class _Recovery:
    def __init__(self, layout: Layout, wal: EventLog, projections: Projections, runtime_id: str, ttl: float) -> None:
        self.layout = layout
        self.wal = wal
        self.projections = projections
        self.runtime_id = runtime_id
        self.ttl = ttl
        self.out = Loaded()
        self.known: dict[str, Known] = {}  # what the replay knows of each Worker's files it touched

    def diagnose(self, level: str, code: str, message: str, path: object, offset: int | None, wid: str | None) -> None:
        self.out.diagnostics.append(
            Diagnostic(
                level=level,  # type: ignore[arg-type]
                code=code,
                message=message,
                path=str(path) if path is not None else None,
                offset=offset,
                worker_ref=WorkerRef(runtime_id=self.runtime_id, worker_id=wid) if wid else None,
                created_at=format_time(now()),
            )
        )

    def corrupt(self, wid: str, exc: RecordCorrupt) -> None:
        self.out.corrupt[wid] = (str(exc.path), exc.offset)
        self.diagnose("error", "store_corrupt", f"worker {wid!r}: {exc.reason}", exc.path, exc.offset, wid)

    def repaired(self, report: Repair, wid: str | None) -> int:
        """Report what `report` says was repaired; the log's line count."""
        if report.torn_bytes:
            self.diagnose(
                "warning",
                "torn_tail_repaired",
                f"cut a torn last line of {report.torn_bytes} bytes (a crash mid-write)",
                report.path,
                report.torn_at,
                wid,
            )
        if report.rebuilt:
            self.diagnose(
                "warning", "index_rebuilt", "the offset index was missing and was rebuilt", report.path, None, wid
            )
        elif report.sealed:
            self.diagnose(
                "warning",
                "index_rebuilt",
                f"the offset index of a closed segment missed {report.indexed} lines, now indexed",
                report.path,
                None,
                wid,
            )
        return report.count

    def run(self) -> Loaded:
        self.load_checkpoint()
        self.load_workers()
        self.load_keys()
        repairs, gaps = self.wal.open()
        for report in repairs:
            self.repaired(report, None)
        for gap in gaps:
            self.diagnose(
                "error",
                "store_corrupt",
                f"events {gap.first} to {gap.last} are missing from the event log; they are skipped",
                gap.path,
                gap.offset,
                None,
            )
        self.replay()
        self.check_workers()
        self.check_queued()
        return self.out

    def load_checkpoint(self) -> None:
        try:
            record = read_record(self.layout.checkpoint, CheckpointRecord)
        except RecordCorrupt as exc:
            self.diagnose("error", "checkpoint_corrupt", f"{exc.reason}; replaying the whole log", exc.path, 0, None)
            return
        self.out.checkpoint_id = record.event_id if record is not None else 0

    def load_workers(self) -> None:
        fileops.mkdir(self.layout.workers, parents=True)
        for entry in os.scandir(self.layout.workers):
            wid = entry.name
            if not entry.is_dir():
                continue
            if not is_valid_id(wid):
                self.diagnose("warning", "stray_directory", "not a worker id; ignored", entry.path, None, None)
                continue
            for name in ("state.json", "worker.json"):
                data = _read_small(f"{entry.path}{os.sep}{name}")
                if data is None:
                    continue
                try:
                    record = self.out.workers[wid] = _WORKER_DECODER.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.corrupt(wid, RecordCorrupt(self.layout.worker_dir(wid) / name, 0, f"unreadable record: {exc}"))
                else:
                    if record.queued:  # only then has it a queued.json to read
                        self.load_queued(wid, f"{entry.path}{os.sep}queued.json")
                break

    def load_queued(self, wid: str, path: str) -> None:
        """The content of a Worker's inputs queued at the checkpoint (the log after it adds and drops some)."""
        data = _read_small(path)
        if data is None:
            return
        try:
            self.out.queued[wid] = _QUEUED_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.diagnose("error", "store_corrupt", f"worker {wid!r}: unreadable queued inputs: {exc}", path, 0, wid)
        self.out.queued_dirty.add(wid)  # the next checkpoint writes it again (or removes it)

    def load_keys(self) -> None:
        clock = now()
        try:
            data = self.layout.input_keys.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        for line in data.splitlines(keepends=True):
            try:
                key = _KEY_DECODER.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.diagnose(
                    "warning",
                    "input_key_unreadable",
                    "skipped an unreadable input key",
                    self.layout.input_keys,
                    offset,
                    None,
                )
            else:
                if key.created_at + self.ttl > clock:
                    self.out.keys[(key.worker_id, key.input_id)] = key
            offset += len(line)

    def replay(self) -> None:
        after = self.out.checkpoint_id
        if after < self.wal.first_id - 1:
            after = self.wal.first_id - 1
        touched: set[str] = set()
        while True:
            lines = self.wal.read(after, 1000, self.wal.last_id, verify=False)
            if not lines:
                break
            for event_id, offset, line, log in lines:
                after = event_id
                payload = unframe(line)
                if payload is None:
                    self.diagnose(
                        "error",
                        "store_corrupt",
                        f"event {event_id}: the line's checksum does not match; its changes are not replayed",
                        log.data,
                        offset,
                        None,
                    )
                    continue
                try:
                    record = decode_wal(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.diagnose("error", "event_unreadable", f"event {event_id}: {exc}", log.data, offset, None)
                    continue
                self.out.replayed += 1
                self.apply(record, touched)

    def apply(self, record: WalLineIn, touched: set[str]) -> None:
        event = record.event
        wid = event.worker_id
        if record.input_key is not None:
            key = record.input_key
            self.out.keys[(key.worker_id, key.input_id)] = key
        if wid is None or not is_valid_id(wid):
            return
        contents = self.out.queued.get(wid)
        if record.queued_content is not None and event.run_id is not None:
            if contents is None:
                contents = self.out.queued[wid] = {}
            contents[event.run_id] = record.queued_content
            self.out.queued_dirty.add(wid)
        elif contents is not None and event.run_id in contents:  # the run started, or ended without starting
            del contents[event.run_id]
            self.out.queued_dirty.add(wid)
        if record.delete_worker:
            self.out.queued.pop(wid, None)
            self.out.queued_dirty.discard(wid)
            self.out.workers.pop(wid, None)
            self.out.corrupt.pop(wid, None)
            self.out.dirty.pop(wid, None)
            # What recovery found in the files of a Worker deleted later in the log (left by a crash before the
            # delete was durable) goes with them: a repair of files about to be removed is nothing to report.
            self.out.diagnostics = [
                d for d in self.out.diagnostics if d.worker_ref is None or d.worker_ref.worker_id != wid
            ]
            for k in [k for k in self.out.keys if k[0] == wid]:
                del self.out.keys[k]
            self.projections.apply(wid, event.id, delete=True, check=True, known=self.known.get(wid))
            return
        if wid in self.out.corrupt and record.worker is None:
            return
        if wid not in touched:  # first touch since the checkpoint: cut a torn tail before appending
            touched.add(wid)
            # Lines a crash left unindexed get their log's key: a transcript's is the position, the runs log's the
            # run number (a position there would break the keys' order, and lookups of earlier runs would miss).
            transcript, runs = self.projections.transcript(wid), self.projections.runs(wid)
            made = os.path.exists(transcript.data_name)  # then its directory is there too
            count = self.repaired(transcript.repair(_position, _any_line), wid) if made else transcript.count()
            if os.path.exists(runs.data_name):
                self.repaired(runs.repair(_run_key, _any_line), wid)
            known = self.known[wid] = Known(self.projections.event_index(wid).truncate_torn(), count, runs.last_key())
            known.made = made
        created = None
        if record.worker is not None:
            state = encode(record.worker)
            if wid in self.out.corrupt:
                path, offset = self.out.corrupt.pop(wid)
                self.diagnose(
                    "warning", "record_repaired", "rebuilt the worker record from the event log", path, offset, wid
                )
                if event.kind == "worker_created":
                    # A worker.json torn by a crash (it is written in place, after the create's line is durable):
                    # written again from the log, and no error to report once it is.
                    self.known[wid].worker_json = False
                    self.out.diagnostics = [
                        d for d in self.out.diagnostics if not (d.code == "store_corrupt" and d.path == path)
                    ]
            self.out.workers[wid] = record.worker
            self.out.dirty[wid] = state
            if event.kind == "worker_created":
                created = state
        entry = (record.entry.sequence, frame(encode(record.entry))) if record.entry is not None else None
        run = None
        if record.ended_run is not None:
            number = run_number(record.ended_run.run_id)
            if number is not None:
                run = (number, frame(encode(record.ended_run)))
        try:
            self.projections.apply(
                wid, event.id, created=created, entry=entry, run=run, check=True, known=self.known[wid]
            )
        except RecordCorrupt as exc:
            self.corrupt(wid, exc)

    def check_workers(self) -> None:
        """A transcript index that disagrees with the state: repair it (rebuild, torn tail) or report the worker."""
        for wid, record in self.out.workers.items():
            if wid in self.out.corrupt:
                continue
            log = self.projections.transcript(wid)
            known = self.known.get(wid)  # a Worker the replay touched: its count is known (0 without an index)
            count = log.count() if known is None else known.count
            if count != record.transcript_len:
                self.repaired(log.repair(lambda _line, position: position, _any_line), wid)
                count = log.count()
                if count > record.transcript_len:  # lines past what was acknowledged: cut them
                    end = log.end_of(record.transcript_len - 1)
                    os.truncate(log.data, end)
                    os.truncate(log.index, record.transcript_len * 16)
                    count = record.transcript_len
                if count < record.transcript_len:
                    self.corrupt(
                        wid,
                        RecordCorrupt(
                            log.data,
                            log.end_of(count - 1),
                            f"transcript has {count} of {record.transcript_len} entries",
                        ),
                    )
                    continue
            if known is None:  # a Worker the replay touched had its runs log repaired at its first line
                runs = self.projections.runs(wid)
                if os.path.exists(runs.data_name) and not os.path.exists(runs.index_name):
                    self.repaired(runs.repair(_run_key, _any_line), wid)
            index = self.projections.event_index(wid)
            if record.last_event_id and (known is None or not known.index_last) and not os.path.exists(index.name):
                self.rebuild_event_index(wid, index)

    def check_queued(self) -> None:
        """Keep the content of runs still queued only; a queued run whose content is missing is reported (the
        Runtime ends it ``failed`` when its turn comes, never runs it without its input)."""
        queued = self.out.queued
        for wid, record in self.out.workers.items():
            contents = queued.get(wid, {})
            kept = {q.run_id: contents[q.run_id] for q in record.queued if q.run_id in contents}
            if len(kept) != len(contents):
                self.out.queued_dirty.add(wid)
            if kept:
                queued[wid] = kept
            else:
                queued.pop(wid, None)
            for q in record.queued:
                if q.run_id not in kept and wid not in self.out.corrupt:
                    self.diagnose(
                        "error",
                        "store_corrupt",
                        f"worker {wid!r}: the content of queued run {q.run_id} is missing",
                        self.layout.worker_dir(wid) / "queued.json",
                        None,
                        wid,
                    )
        for wid in [wid for wid in queued if wid not in self.out.workers]:
            del queued[wid]
            self.out.queued_dirty.add(wid)

    def rebuild_event_index(self, wid: str, index: IdIndex) -> None:
        """Scan the log for the events naming `wid` (a repair, once)."""
        ids = []
        after = self.wal.first_id - 1
        decoder = _EVENT_LINE_DECODER
        while True:
            lines = self.wal.read(after, 1000, self.wal.last_id, verify=False)
            if not lines:
                break
            for event_id, _, line, _ in lines:
                after = event_id
                payload = unframe(line)
                if payload is None:
                    continue
                try:
                    if decoder.decode(payload).event.worker_id == wid:
                        ids.append(event_id)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
        fileops.mkdir(index.path.parent, parents=True)
        fd = fileops.open(index.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            fileops.write(fd, b"".join(event_id.to_bytes(8, "little", signed=True) for event_id in ids))
        finally:
            fileops.close(fd)
        self.diagnose(
            "warning", "index_rebuilt", "the worker's event index was missing and was rebuilt", index.path, None, wid
        )


def _read_small(path: str) -> bytes | None:
    """The bytes of a small file, None when it does not exist (fewer calls than `Path.read_bytes`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _any_line(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True


def _position(_line: bytes, position: int) -> int:
    return position


class _RunKey(msgspec.Struct):
    run_id: str


def _run_key(line: bytes, position: int) -> int:
    try:
        number = run_number(msgspec.json.decode(line, type=_RunKey).run_id)
    except (msgspec.DecodeError, msgspec.ValidationError):
        number = None
    return number if number is not None else position


def load(layout: Layout, wal: EventLog, projections: Projections, *, runtime_id: str, ttl: float) -> Loaded:
    """Load Worker states, keys and the log; replay the log after the checkpoint; repair what a crash left."""
    return _Recovery(layout, wal, projections, runtime_id, ttl).run()
