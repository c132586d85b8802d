from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from worker_runtime_core import times as _times
from worker_runtime_core.times import format_time


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_format_time_matches_datetime_to_the_microsecond(ts: float) -> None:
    text = format_time(ts)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(parsed.timestamp() - ts) <= 1e-6 + abs(ts) * 1e-15


def test_format_time_is_rfc3339_utc() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(1_795_000_000.25) == "2026-11-18T11:06:40.250000Z"
    assert format_time(59.9999996) == "1970-01-01T00:01:00.000000Z"  # rounding carries into the second


def test_remembered_times_stay_correct_and_bounded() -> None:
    values = [1_795_000_000 + i / 1000 for i in range(_times._MEMO_SIZE + 10)]
    first = [format_time(v) for v in values]
    assert len(_times._memo) <= _times._MEMO_SIZE
    assert [format_time(v) for v in values] == first  # from the memo or formatted again: the same text
    for value, text in zip(values[::997], first[::997], strict=True):
        assert text == datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
