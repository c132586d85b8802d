from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from worker_runtime_store_fs.records import RecordCorrupt, read_record, write_atomic


class Thing(msgspec.Struct):
    name: str
    size: int


@pytest.mark.parametrize("durable", [True, False])
def test_a_record_round_trips_and_leaves_no_temp_file(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "thing.json"
    write_atomic(path, msgspec.json.encode(Thing("a", 1)), durable=durable)
    write_atomic(path, msgspec.json.encode(Thing("b", 2)), durable=durable)
    assert read_record(path, Thing) == Thing("b", 2)
    assert [p.name for p in tmp_path.iterdir()] == ["thing.json"]


def test_a_missing_record_is_none_and_a_damaged_one_names_its_path(tmp_path: Path) -> None:
    assert read_record(tmp_path / "nope.json", Thing) is None
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"name": "a", "si')
    with pytest.raises(RecordCorrupt) as info:
        read_record(path, Thing)
    assert info.value.path == path
