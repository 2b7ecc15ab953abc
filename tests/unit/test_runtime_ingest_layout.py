"""How ingest packs concurrent requests into stream entries (pure)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from hda.runtime.ingest.writer import Submission, layout_entries

LINES = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30)
REQUEST = st.tuples(
    st.sampled_from(["a", "b"]), st.dictionaries(st.integers(0, 2), LINES, min_size=1, max_size=3)
)


def submission(
    stream: str, groups: dict[int, list[bytes]], loop: asyncio.AbstractEventLoop
) -> Submission:
    ordered = list(groups.items())
    first = (ordered[0][0], 0)
    last = (ordered[-1][0], len(ordered[-1][1]) - 1)
    count = sum(len(lines) for lines in groups.values())
    return Submission(stream, groups, first, last, count, loop.create_future())


@settings(max_examples=200)
@given(st.lists(REQUEST, min_size=1, max_size=6), st.integers(1, 8), st.integers(8, 120))
def test_layout_keeps_order_limits_and_locates_first_and_last(
    requests: list[tuple[str, dict[int, list[bytes]]]], max_events: int, max_bytes: int
) -> None:
    loop = asyncio.new_event_loop()
    try:
        submissions = [submission(stream, groups, loop) for stream, groups in requests]
        entries, located, _ = layout_entries(submissions, max_events, max_bytes)
    finally:
        loop.close()
    expected: dict[tuple[str, int], list[bytes]] = {}
    for s in submissions:
        for partition, lines in s.groups.items():
            expected.setdefault((s.stream, partition), []).extend(lines)
    assert {
        slot: [line for chunk in chunks for line in chunk] for slot, chunks in entries.items()
    } == expected
    for chunks in entries.values():
        for chunk in chunks:
            assert 1 <= len(chunk) <= max_events
            assert len(chunk) == 1 or sum(len(line) + 1 for line in chunk) <= max_bytes
    for s, spots in zip(submissions, located, strict=True):
        for partition, index in (s.first, s.last):
            chunk_index, offset = spots[(partition, index)]
            assert entries[(s.stream, partition)][chunk_index][offset] is s.groups[partition][index]


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # traced
            st.dictionaries(st.integers(0, 2), st.integers(1, 12), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 8),
    st.integers(8, 120),
)
def test_each_entry_carries_the_contexts_of_exactly_the_traced_requests_in_it(
    requests: list[tuple[bool, dict[int, int]]], max_events: int, max_bytes: int
) -> None:
    loop = asyncio.new_event_loop()
    try:
        submissions = []
        for number, (traced, sizes) in enumerate(requests):
            groups = {p: [f"{number}:{p}:{i}".encode() for i in range(n)] for p, n in sizes.items()}
            submissions.append(submission("s", groups, loop))
            if traced:
                submissions[-1].trace = f"ctx-{number}".encode()
        entries, _, traces = layout_entries(submissions, max_events, max_bytes)
    finally:
        loop.close()
    for slot, chunks in entries.items():
        for number, chunk in enumerate(chunks):
            owners = {int(line.split(b":")[0]) for line in chunk}
            expected = sorted(f"ctx-{n}".encode() for n in owners if requests[n][0])
            assert sorted(traces.get(slot, {}).get(number, [])) == expected
