"""Segment files: record encoding, scanning, torn tails, recovery and resume positions."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hda.runtime.segments import (
    CHECKPOINT_BYTES,
    FilePosition,
    SegmentRangeReader,
    SegmentWriter,
    encode_header,
    encode_record,
    iter_file_lines,
    list_segments,
    record_position,
    resume_segment,
    scan_segment,
)


def record(partition: int, ms: int, *events: bytes) -> bytes:
    return encode_record(partition, b"%d-0" % ms, b"1-0", len(events), b"\n".join(events))


def test_a_record_is_one_json_line_with_its_ids_and_events() -> None:
    line = record(3, 1700, b'{"a":1}', b'{"b":[1,2]}')
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == {
        "id": "3/1700-0",
        "src": "1-0",
        "n": 2,
        "events": [{"a": 1}, {"b": [1, 2]}],
    }
    assert record_position(line) == (3, (1700, 0))
    assert record_position(encode_header(1, "s", 0, {})) is None


def test_scan_uses_the_header_and_stops_at_a_torn_tail() -> None:
    header = encode_header(2, "s", 5, {0: (10, 0), 1: (11, 0)})
    body = record(0, 20, b"{}") + record(0, 21, b"{}")
    torn = record(1, 22, b"{}")[:-7]
    scan = scan_segment(header + body + torn)
    assert scan.header_last == {0: (10, 0), 1: (11, 0)}
    assert scan.last == {0: (21, 0), 1: (11, 0)}
    assert scan.records == 2
    assert scan.intact_length == len(header + body)


@given(st.integers(min_value=0, max_value=400))
def test_any_cut_of_a_segment_scans_to_a_whole_record_prefix(cut: int) -> None:
    data = encode_header(1, "s", 0, {}) + b"".join(
        record(p % 2, 100 + p, b'{"i":%d}' % p) for p in range(6)
    )
    scan = scan_segment(data[:cut])
    assert data.startswith(data[: scan.intact_length])
    assert scan.intact_length <= cut
    assert data[: scan.intact_length].endswith(b"\n") or scan.intact_length == 0


def test_writer_recovers_by_cutting_the_torn_tail(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=1 << 20, max_age_seconds=600)
    assert writer.recover() == {}
    writer.append([(0, (5, 0), record(0, 5, b"{}")), (1, (6, 0), record(1, 6, b"{}"))])
    writer.sync()
    writer.append([(0, (7, 0), record(0, 7, b"{}")[:10])])  # a crash mid-write
    writer.close()
    again = SegmentWriter(tmp_path, "s", max_bytes=1 << 20, max_age_seconds=600)
    assert again.recover() == {0: (5, 0), 1: (6, 0)}
    ((_, path),) = list_segments(tmp_path)
    assert path.read_bytes().endswith(record(1, 6, b"{}"))


def test_rotation_carries_the_last_ids_in_the_next_header(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=200, max_age_seconds=600)
    writer.recover()
    writer.append(
        [
            (p % 2, (100 + p, 0), record(p % 2, 100 + p, b'{"pad":"%s"}' % (b"x" * 50)))
            for p in range(8)
        ]
    )
    writer.sync()
    writer.close()
    segments = list_segments(tmp_path)
    assert len(segments) > 2
    last_scan = scan_segment(segments[-1][1].read_bytes())
    assert last_scan.last == {0: (106, 0), 1: (107, 0)}
    fresh = SegmentWriter(tmp_path, "s", max_bytes=200, max_age_seconds=600)
    assert fresh.recover() == {0: (106, 0), 1: (107, 0)}


def _ten_records_in_segments(directory: Path) -> list[bytes]:
    writer = SegmentWriter(directory, "s", max_bytes=150, max_age_seconds=600)
    writer.recover()
    lines = [record(p % 2, 100 + p, b"{}") for p in range(10)]
    writer.append([(p % 2, (100 + p, 0), line) for p, line in enumerate(lines)])
    writer.close()
    assert len(list_segments(directory)) > 3
    return lines


def test_resume_segment_holds_the_next_record_of_every_partition(tmp_path: Path) -> None:
    lines = _ten_records_in_segments(tmp_path)
    end = FilePosition(list_segments(tmp_path)[-1][0], 1 << 30)
    for p in range(1, 10):
        after = {0: (100 + p - 1 - (p - 1) % 2, 0), 1: (100 + p - 1 - p % 2, 0)}
        number = resume_segment(tmp_path, after, 2)
        assert number is not None
        read = SegmentRangeReader(tmp_path, FilePosition(number, 0), end).read() or []
        # everything after the vector is at or after the segment found (nothing is missed)
        assert [line + b"\n" for line in read][-(10 - p) :] == lines[p:]
    assert resume_segment(tmp_path, {0: (100, 0)}, 2) == list_segments(tmp_path)[0][0]
    assert resume_segment(tmp_path / "none", {}, 2) is None


def test_range_reader_reads_bounded_chunks_and_stops_at_the_durable_end(tmp_path: Path) -> None:
    lines = _ten_records_in_segments(tmp_path)
    segments = list_segments(tmp_path)
    last_number, last_path = segments[-1]
    durable = FilePosition(last_number, last_path.stat().st_size)
    with last_path.open("ab") as handle:
        handle.write(record(0, 999, b"{}")[:-5])  # a torn tail past the durable end
    reader = SegmentRangeReader(tmp_path, FilePosition(segments[0][0], 0), durable, chunk_bytes=1)
    batches = []
    while (batch := reader.read()) is not None:
        batches.append(batch)
    assert all(len(batch) == 1 for batch in batches)  # one line per call at chunk_bytes=1
    assert [b[0] + b"\n" for b in batches] == lines


def test_file_lines_carry_a_line_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 10 + b"\n" + b"bb\n" + b"torn")
    assert list(iter_file_lines(path, chunk_bytes=3)) == [(11, b"a" * 10), (14, b"bb")]
    assert list(iter_file_lines(path, start=11, end=14, chunk_bytes=2)) == [(14, b"bb")]


def test_rotation_by_age(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=1 << 30, max_age_seconds=0)
    writer.recover()
    for ms in (1, 2, 3):
        writer.append([(0, (ms, 0), record(0, ms, b"{}"))])
        writer.sync()
    writer.close()
    segments = list_segments(tmp_path)
    assert len(segments) == 4  # the first (empty) one, then a new one before each write
    assert scan_segment(segments[-1][1].read_bytes()).header_last == {0: (2, 0)}


@given(st.data())
def test_scan_rejects_a_torn_line_that_a_later_record_was_appended_to(data: st.DataObject) -> None:
    header = encode_header(1, "s", 0, {})
    intact = record(0, 10, b'{"id":"looks like a record"}')
    torn = record(0, 11, b'{"a":1}', b'{"b":2}')
    cut = data.draw(st.integers(min_value=1, max_value=len(torn) - 1))  # at most its newline lost
    merged = header + intact + torn[:cut] + record(1, 12, b'{"c":3}')
    scan = scan_segment(merged)
    assert scan.records == 1
    assert scan.last == {0: (10, 0)}
    assert scan.intact_length == len(header + intact)


def test_rollback_forgets_unsynced_records_and_segments_begun_since(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=200, max_age_seconds=600)
    writer.recover()
    writer.append([(0, (1, 0), record(0, 1, b"{}"))])
    durable = writer.sync()
    pad = b'{"pad":"%s"}' % (b"x" * 50)
    writer.append([(0, (ms, 0), record(0, ms, pad)) for ms in range(2, 8)])  # rotates
    assert len(list_segments(tmp_path)) > 1
    assert writer.rollback() > 0
    assert [number for number, _ in list_segments(tmp_path)] == [durable.segment]
    assert list_segments(tmp_path)[0][1].stat().st_size == durable.offset
    writer.append([(0, (8, 0), record(0, 8, b"{}"))])
    writer.close()
    again = SegmentWriter(tmp_path, "s", max_bytes=200, max_age_seconds=600)
    assert again.recover() == {0: (8, 0)}
    ids = [
        record_position(line)
        for _, path in list_segments(tmp_path)
        for line in path.read_bytes().splitlines()
    ]
    assert [position for position in ids if position] == [(0, (1, 0)), (0, (8, 0))]


def _big_records(writer: SegmentWriter, first: int, count: int) -> list[bytes]:
    pad = b'{"pad":"%s"}' % (b"x" * 100_000)
    lines = [record(ms % 2, ms, pad) for ms in range(first, first + count)]
    writer.append(
        [
            (ms % 2, (ms, 0), line)
            for ms, line in zip(range(first, first + count), lines, strict=True)
        ]
    )
    writer.sync()
    return lines


def test_live_start_skips_the_current_segment_up_to_a_checkpoint(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=1 << 30, max_age_seconds=600)
    writer.recover()
    lines = _big_records(writer, 100, 40)  # about 4 MiB: checkpoints every MiB
    after = {0: (130, 0), 1: (131, 0)}
    begin = writer.live_start(after, 2)
    assert begin.segment == writer.current_segment
    assert begin.offset > 2 * CHECKPOINT_BYTES  # most of the segment is not read again
    reader = SegmentRangeReader(tmp_path, begin, writer.durable_position)
    read = [line for batch in iter(reader.read, None) for line in batch]
    positions = [record_position(line) for line in read]
    wanted = [line for line, at in zip(read, positions, strict=True) if at and at[1] > after[at[0]]]
    assert [line + b"\n" for line in wanted] == lines[32:]
    assert writer.live_start({0: (130, 0)}, 2).offset == 0  # partition 1 from the beginning
    writer.close()


def test_rollback_forgets_checkpoints_past_the_durable_end(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "s", max_bytes=1 << 30, max_age_seconds=600)
    writer.recover()
    _big_records(writer, 100, 12)
    pad = b'{"pad":"%s"}' % (b"x" * 100_000)
    writer.append([(0, (ms, 0), record(0, ms, pad)) for ms in range(200, 230)])  # never synced
    writer.rollback()
    rewritten = [record(0, ms, pad) for ms in range(300, 330)]
    writer.append([(0, (ms, 0), line) for ms, line in zip(range(300, 330), rewritten, strict=True)])
    writer.sync()
    # a checkpoint of the rolled-back bytes would skip some of the records written since
    begin = writer.live_start({0: (299, 0), 1: (299, 0)}, 2)
    reader = SegmentRangeReader(tmp_path, begin, writer.durable_position)
    read = [line + b"\n" for batch in iter(reader.read, None) for line in batch]
    assert read[-30:] == rewritten
    writer.close()
