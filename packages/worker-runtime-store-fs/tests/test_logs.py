"""IndexedLog and IdIndex: appends, O(page) reads, lookups, and repair after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from worker_runtime_store_fs.logs import FdCache, IdIndex, IndexedLog, frame, unframe
from worker_runtime_store_fs.projections import default_write
from worker_runtime_store_fs.records import RecordCorrupt


def _line(n: int) -> bytes:
    return frame(json.dumps({"n": n}).encode())


def _valid(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


@pytest.fixture
def log(tmp_path: Path) -> IndexedLog:
    return IndexedLog(tmp_path / "data.jsonl", tmp_path / "data.idx")


def _fill(log: IndexedLog, n: int, key_base: int = 0) -> None:
    fds = FdCache()
    for start in range(0, n, 7):
        log.append(fds, [(key_base + i, _line(i)) for i in range(start, min(n, start + 7))], default_write)
    fds.close()


def test_pages_come_back_as_written(log: IndexedLog) -> None:
    _fill(log, 50)
    assert log.count() == 50
    page = log.read(45, 10)
    assert [json.loads(line)["n"] for _, _, line in page] == [45, 46, 47, 48, 49]
    assert [key for key, _, _ in page] == [45, 46, 47, 48, 49]
    offsets = [offset for _, offset, _ in log.read(0, 50)]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert log.read(50, 10) == []


def test_keys_are_found_by_binary_search(log: IndexedLog) -> None:
    _fill(log, 40, key_base=1000)
    assert log.find(1000) == 0 and log.find(1039) == 39 and log.find(1017) == 17
    assert log.find(999) == -1 and log.find(2000) == -1
    assert log.bisect(1017) == 18 and log.bisect(0) == 0 and log.bisect(5000) == 40
    assert log.last_key() == 1039


def test_a_torn_last_line_is_cut_and_reported(log: IndexedLog) -> None:
    _fill(log, 10)
    size = log.data.stat().st_size
    with open(log.data, "ab") as f:
        f.write(b'{"n": 10')  # a crash in the middle of a write
    report = log.repair(lambda _line, pos: pos, _valid)
    assert report.torn_bytes == 8 and report.torn_at == size
    assert log.data.stat().st_size == size and log.count() == 10


def test_complete_lines_missing_from_the_index_are_indexed(log: IndexedLog) -> None:
    _fill(log, 10)
    with open(log.data, "ab") as f:
        f.write(_line(10) + _line(11))  # written, then a crash before the index records
    report = log.repair(lambda _line, pos: pos, _valid)
    assert report.indexed == 2 and report.torn_bytes == 0
    assert [json.loads(line)["n"] for _, _, line in log.read(10, 5)] == [10, 11]


def test_a_missing_index_is_rebuilt(log: IndexedLog) -> None:
    _fill(log, 25)
    before = log.read(0, 25)
    log.index.unlink()
    report = log.repair(lambda _line, pos: pos, _valid)
    assert report.rebuilt and report.indexed == 25
    assert log.read(0, 25) == before


def test_a_changed_byte_is_record_corrupt_naming_the_offset_of_its_line(log: IndexedLog) -> None:
    _fill(log, 10)
    at = log.end_of(5) + len('{"n": ')  # the digit of line 6
    with open(log.data, "r+b") as f:
        f.seek(at)
        f.write(b"9")
    assert [json.loads(line)["n"] for _, _, line in log.read(0, 6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(RecordCorrupt) as info:
        log.read(4, 4)
    assert (info.value.path, info.value.offset) == (log.data, log.end_of(5))
    assert "checksum" in info.value.reason
    [(_, _, raw)] = log.read(6, 1, verify=False)  # unchecked: the whole line as it is on disk
    assert raw.startswith(b'{"n": 9}\t') and unframe(raw) is None


def test_read_array_gives_a_page_as_one_json_array_of_the_payloads(log: IndexedLog) -> None:
    _fill(log, 50)
    assert json.loads(log.read_array(45, 10)) == [{"n": n} for n in range(45, 50)]
    assert json.loads(log.read_array(0, 3)) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert log.read_array(50, 10) == b"[]" and log.read_array(0, 0) == b"[]"


def test_read_array_reports_every_flipped_bit_as_record_corrupt_naming_its_line(log: IndexedLog) -> None:
    _fill(log, 3)
    pristine = log.data.read_bytes()
    offsets = [offset for _, offset, _ in log.read(0, 3)]
    for at in range(len(pristine)):  # each byte of the payloads, tabs, checksums and newlines
        for bit in (0x01, 0x20):
            damaged = bytearray(pristine)
            damaged[at] ^= bit
            log.data.write_bytes(bytes(damaged))
            with pytest.raises(RecordCorrupt) as info:
                log.read_array(0, 3)
            assert info.value.offset == max(o for o in offsets if o <= at), (at, bit)
    log.data.write_bytes(pristine)
    assert json.loads(log.read_array(0, 3)) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_whole_last_line_whose_checksum_fails_is_cut_as_torn(log: IndexedLog) -> None:
    _fill(log, 10)
    size = log.data.stat().st_size
    with open(log.data, "ab") as f:
        f.write(_line(10).replace(b"10", b"11"))  # not indexed yet and damaged: what a crash mid-write leaves
    report = log.repair(lambda _line, pos: pos, _valid)
    assert (report.torn_at, report.indexed, log.count()) == (size, 0, 10)
    assert log.data.stat().st_size == size


def test_frame_and_unframe_round_trip_and_refuse_damage() -> None:
    line = frame(b'{"a":"x\\ty"}')
    assert line.endswith(b"\n") and line.count(b"\t") == 1
    assert unframe(line) == b'{"a":"x\\ty"}'
    assert unframe(line[:-1]) is None  # torn: no newline
    assert unframe(b'{"a":"x"}\n') is None  # no checksum
    assert unframe(line.replace(b"x", b"z")) is None


def test_index_records_past_the_data_are_dropped(log: IndexedLog) -> None:
    _fill(log, 10)
    end = log.end_of(7)
    os.truncate(log.data, end)  # the data lost its last two lines (a power cut with fsync=never)
    log.repair(lambda _line, pos: pos, _valid)
    assert log.count() == 8


def test_a_failed_append_leaves_both_files_as_they_were(log: IndexedLog) -> None:
    _fill(log, 5)
    sizes = (log.data.stat().st_size, log.index.stat().st_size)
    calls = 0

    def fail_second(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        default_write(fd, data)

    fds = FdCache()
    with pytest.raises(OSError):
        log.append(fds, [(5, _line(5))], fail_second)
    fds.close()
    assert (log.data.stat().st_size, log.index.stat().st_size) == sizes


def test_id_index_bisects(tmp_path: Path) -> None:
    index = IdIndex(tmp_path / "w.idx")
    fds = FdCache()
    for event_id in [3, 7, 8, 20, 21]:
        index.append(fds, event_id, default_write)
    fds.close()
    assert index.ids(0, 10) == [3, 7, 8, 20, 21]
    assert index.bisect(7) == 2 and index.bisect(0) == 0 and index.bisect(21) == 5
    assert index.last() == 21


def test_the_fd_cache_closes_the_least_recently_used(tmp_path: Path) -> None:
    fds = FdCache(capacity=2)
    a, b, c = (tmp_path / n for n in "abc")
    fd_a = fds.get(a)
    fds.get(b)
    assert fds.get(a) == fd_a  # reused
    fds.get(c)  # evicts b, the least recently used
    with pytest.raises(OSError):
        os.fstat(fds._fds.get(b, -1))
    fds.close()
