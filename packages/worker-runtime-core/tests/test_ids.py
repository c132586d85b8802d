from hypothesis import given
from hypothesis import strategies as st

from worker_runtime_core import generate_id, is_valid_id


def test_ids_matching_the_pattern_are_valid() -> None:
    for value in ["a", "w1", "rt-eu-1", "A.b_c-9", "x" * 128]:
        assert is_valid_id(value), value


def test_unsafe_ids_are_rejected() -> None:
    for value in ["", "..", ".hidden", "-x", "_x", "a/b", "a\\b", "a\n", "a\x00b", "a b", " a", "x" * 129, "é"]:
        assert not is_valid_id(value), value


def test_non_strings_are_not_ids() -> None:
    for value in [None, 1, b"abc", ["a"]]:
        assert not is_valid_id(value)


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {generate_id("w") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_id(i) and i.startswith("w-") for i in ids)


@given(st.text(max_size=140))
def test_a_valid_id_never_holds_a_path_separator_or_dotdot_prefix(value: str) -> None:
    if is_valid_id(value):
        assert "/" not in value and "\\" not in value and "\n" not in value and not value.startswith(".")
        assert 1 <= len(value) <= 128
