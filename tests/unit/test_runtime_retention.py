"""Trim computation: never past what the slowest group still needs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hda.runtime.retention import (
    GroupPosition,
    dead_letter_minid,
    retention_minid,
    safe_minid,
    trim_minid,
)

IDS = st.tuples(st.integers(0, 10**6), st.integers(0, 5))


def test_safe_minid_is_the_oldest_pending_or_the_next_undelivered() -> None:
    assert safe_minid([]) is None
    assert safe_minid([GroupPosition((50, 0), None)]) == (50, 1)
    assert safe_minid([GroupPosition((50, 0), (20, 3)), GroupPosition((40, 0), None)]) == (20, 3)


@given(st.lists(st.tuples(IDS, st.one_of(st.none(), IDS)), min_size=1, max_size=5))
def test_safe_minid_never_passes_any_group(
    groups: list[tuple[tuple[int, int], tuple[int, int] | None]],
) -> None:
    positions = [
        GroupPosition(last, min(pending, last) if pending is not None else None)
        for last, pending in groups
    ]
    minid = safe_minid(positions)
    assert minid is not None
    for group in positions:
        needed = (
            group.oldest_pending
            if group.oldest_pending is not None
            else (group.last_delivered[0], group.last_delivered[1] + 1)
        )
        assert minid <= needed


def test_retention_by_age_and_by_estimated_length() -> None:
    assert retention_minid(
        now_ms=100_000, max_age_seconds=30, max_length=None, length=0, first_id=None, last_id=None
    ) == (70_000, 0)
    # 100 entries spread over 1000..2000 ms, keep 25: cut about three quarters in
    assert retention_minid(
        now_ms=0,
        max_age_seconds=None,
        max_length=25,
        length=100,
        first_id=(1000, 0),
        last_id=(2000, 0),
    ) == (1750, 0)
    assert (
        retention_minid(
            now_ms=0,
            max_age_seconds=None,
            max_length=200,
            length=100,
            first_id=(1000, 0),
            last_id=(2000, 0),
        )
        is None
    )


def test_trim_minid_combines_without_passing_the_safe_point() -> None:
    assert trim_minid(None, (10, 0), has_retention=True) is None
    assert trim_minid((5, 0), None, has_retention=False) == (5, 0)  # drop what all groups passed
    assert trim_minid((5, 0), None, has_retention=True) is None  # retention asks for nothing
    assert trim_minid((5, 0), (10, 0), has_retention=True) == (5, 0)
    assert trim_minid((50, 0), (10, 0), has_retention=True) == (10, 0)


def test_dead_letter_minid_cuts_at_now_minus_max_age() -> None:
    assert dead_letter_minid(now_ms=10_000, max_age_seconds=2) == (8_000, 0)
    assert dead_letter_minid(now_ms=1_000, max_age_seconds=60) == (0, 0)
