"""Whole-stream position vectors and the durable bound (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hda.runtime.positions import (
    BEGINNING,
    MAX_SEQUENCE,
    durable_bound,
    format_position_vector,
    parse_position_vector,
    previous_stream_id,
)


def test_a_vector_names_one_id_per_partition() -> None:
    assert parse_position_vector("0/1700-0,3/1700-5", 4) == {0: (1700, 0), 3: (1700, 5)}
    assert parse_position_vector(" 2/9-1 ", 4) == {2: (9, 1)}


def test_zero_is_the_empty_vector_everything_from_the_beginning() -> None:
    assert parse_position_vector("0", 4) == {}
    assert format_position_vector({}) == "0"
    assert format_position_vector({0: BEGINNING}) == "0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/1-0,nope", "'nope' is not PARTITION/MS-SEQ"),
        ("x/1-0", "'x/1-0' is not PARTITION/MS-SEQ"),
        ("4/1-0", "partition 4 does not exist (the stream has 4: 0..3)"),
        ("1/1-0,1/2-0", "partition 1 is named twice"),
        ("", "'' is not PARTITION/MS-SEQ"),
    ],
)
def test_bad_vectors_are_refused_naming_the_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="from=") as refused:
        parse_position_vector(text, 4)
    assert message in str(refused.value)


@given(
    st.dictionaries(
        st.integers(0, 15),
        st.tuples(st.integers(0, 2**48), st.integers(0, 2**20)).filter(lambda i: i > BEGINNING),
    )
)
def test_format_and_parse_round_trip(vector: dict[int, tuple[int, int]]) -> None:
    assert parse_position_vector(format_position_vector(vector), 16) == vector


def test_previous_stream_id_steps_back_over_a_millisecond() -> None:
    assert previous_stream_id((5, 3)) == (5, 2)
    assert previous_stream_id((5, 0)) == (4, MAX_SEQUENCE)
    assert previous_stream_id((0, 0)) == BEGINNING


def test_durable_bound_stops_below_the_oldest_pending_entry() -> None:
    assert durable_bound((90, 0), None) == (90, 0)  # nothing pending: all delivered
    assert durable_bound((90, 0), (40, 2)) == (40, 1)
    assert durable_bound((90, 0), (40, 0)) == (39, MAX_SEQUENCE)
    # a pending ID past what the group info showed (read first) cannot raise the bound
    assert durable_bound((30, 0), (40, 0)) == (30, 0)
