"""Which segments retention deletes: oldest first, never a protected one."""

from __future__ import annotations

from hda.runtime.segment_retention import SegmentFile, segments_to_delete


def files(stream: str, *modified: float, size: int = 100) -> list[SegmentFile]:
    return [SegmentFile(stream, n, size, m) for n, m in enumerate(modified)]


def numbers(chosen: list[SegmentFile]) -> list[tuple[str, int]]:
    return [(s.stream, s.number) for s in chosen]


def test_age_deletes_segments_last_written_before_the_cut() -> None:
    chosen = segments_to_delete(
        {"a": files("a", 10, 20, 30, 40)},
        {"a": 3},
        now=100,
        max_age_seconds=75,
        max_total_bytes=None,
    )
    assert numbers(chosen) == [("a", 0), ("a", 1)]


def test_bytes_delete_the_oldest_across_streams_until_under_the_limit() -> None:
    chosen = segments_to_delete(
        {"a": files("a", 10, 30, 50), "b": files("b", 20, 40, 60)},
        {"a": 2, "b": 2},
        now=100,
        max_age_seconds=None,
        max_total_bytes=350,
    )
    assert numbers(chosen) == [("a", 0), ("b", 0), ("a", 1)]


def test_protected_segments_stay_even_over_the_limits() -> None:
    chosen = segments_to_delete(
        {"a": files("a", 10, 20, 30)},
        {"a": 1},  # a subscriber reads segment 1; segment 2 is being written
        now=1000,
        max_age_seconds=1,
        max_total_bytes=0,
    )
    assert numbers(chosen) == [("a", 0)]


def test_without_protection_given_the_newest_segment_stays() -> None:
    chosen = segments_to_delete(
        {"a": files("a", 10, 20)}, {}, now=1000, max_age_seconds=1, max_total_bytes=None
    )
    assert numbers(chosen) == [("a", 0)]
