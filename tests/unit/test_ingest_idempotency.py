"""The pure parts of idempotent ingest: key checks, records and the keyed partition."""

from __future__ import annotations

import pytest

from hda.runtime.ingest.idempotency import (
    BadIdempotencyKeyError,
    WrittenRecord,
    check_key,
    digest,
    keyed_partition,
    record_key,
)


def test_a_uuid_key_is_accepted_as_given() -> None:
    key = "0b6f9a6e-4f7c-4a4e-9d55-0c2b5e1e8f10"
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "Idempotency-Key is empty"),
        ("a b", "found ' '"),
        ("tab\tkey", "found '\\t'"),
        ("caf\u00e9", "found '\u00e9'"),
        ("k" * 201, "201 characters long"),
    ],
)
def test_a_bad_key_names_the_header_and_the_problem(key: str, message: str) -> None:
    with pytest.raises(BadIdempotencyKeyError, match="Idempotency-Key") as raised:
        check_key(key)
    assert message in str(raised.value)


def test_a_bad_query_key_names_the_query_parameter() -> None:
    with pytest.raises(BadIdempotencyKeyError, match="query parameter idempotencyKey is empty"):
        check_key("", source="query parameter idempotencyKey")


def test_the_record_lives_in_the_partitions_slot() -> None:
    assert record_key("logs", 3, "k1") == "{hda:logs:3}:idem:k1"


def test_a_key_picks_the_same_partition_every_time_and_keys_spread() -> None:
    assert keyed_partition("batch-17", 8) == keyed_partition("batch-17", 8)
    assert len({keyed_partition(f"batch-{n}", 8) for n in range(200)}) == 8


def test_a_record_gives_the_receipt_ids_of_any_event_across_its_entries() -> None:
    record = WrittenRecord.parse([1, b"abc 1700-0/2 1700-1/3"])
    assert record == WrittenRecord("abc", (("1700-0", 2), ("1700-1", 3)), written=True)
    assert record.event_id(5, 0) == "5/1700-0/0"
    assert record.event_id(5, 1) == "5/1700-0/1"
    assert record.event_id(5, 2) == "5/1700-1/0"
    assert record.event_id(5, 4) == "5/1700-1/2"
    with pytest.raises(IndexError):
        record.event_id(5, 5)


def test_a_seen_record_is_not_written() -> None:
    assert WrittenRecord.parse([0, b"abc 1-0/1"]).written is False


def test_an_unexpected_script_reply_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unexpected reply from the write-once script"):
        WrittenRecord.parse(b"OK")


def test_the_digest_is_the_same_for_the_same_lines_and_differs_for_others() -> None:
    assert digest([b'{"a":1}', b'{"a":2}']) == digest([b'{"a":1}', b'{"a":2}'])
    assert digest([b'{"a":1}', b'{"a":2}']) != digest([b'{"a":2}', b'{"a":1}'])
