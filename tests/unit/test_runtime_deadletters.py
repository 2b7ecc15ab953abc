"""Dead-letter parsing: IDs and the events a replay sends back."""

from __future__ import annotations

import orjson
import pytest

from hda.runtime.config import StreamConfig
from hda.runtime.deadletters import parse_dead_letter, parse_dead_letter_id

STREAM = StreamConfig(name="logs", partitions=2)


def test_dead_letter_id_is_partition_and_entry() -> None:
    assert parse_dead_letter_id(STREAM, "1/1700-3") == (1, "1700-3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1700-3", "is not a dead-letter ID"),
        ("x/1-0", "is not a dead-letter ID"),
        ("2/1-0", "partition 2 is outside 0..1"),
    ],
)
def test_bad_dead_letter_id_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dead_letter_id(STREAM, text)


def test_replay_sends_the_failed_events_and_skips_records_without_one() -> None:
    records = [
        {"index": 0, "error": "bad", "event": {"a": 1}},
        {"index": 1, "error": "aggregate", "event": None},
    ]
    letter = parse_dead_letter(
        1,
        b"5-0",
        {b"src": b"4-0", b"n": b"2", b"d": b"\n".join(orjson.dumps(r) for r in records)},
    )
    assert (letter.id, letter.source_entry, letter.records) == ("1/5-0", "4-0", records)
    assert letter.replay_lines() == [b'{"a":1}']
