"""Pure encoding rules: keys, partitions, IDs, request bodies."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hda.runtime.codec import (
    BadInputError,
    dead_letter_key,
    event_id,
    input_key,
    json_array_of_lines,
    next_stream_id,
    output_key,
    parse_json_body,
    parse_ndjson,
    parse_record_id,
    parse_stream_id,
    partition_for_key,
    split_by_partition,
)
from hda.runtime.resp import RedisAddress

JSON_OBJECTS = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.booleans(), st.none()),
    max_size=5,
)


def test_keys_of_a_partition_share_one_hash_tag() -> None:
    tags = {
        key.split("}")[0] + "}"
        for key in (input_key("s", 3), output_key("s", 3), dead_letter_key("s", 3))
    }
    assert tags == {"{hda:s:3}"}
    assert input_key("s", 3) != output_key("s", 3)


@given(
    st.one_of(st.text(), st.integers(), st.lists(st.integers(), max_size=3)), st.integers(1, 256)
)
def test_partition_for_key_is_stable_and_in_range(key: object, partitions: int) -> None:
    partition = partition_for_key(key, partitions)
    assert 0 <= partition < partitions
    assert partition_for_key(key, partitions) == partition


def test_partition_for_key_matches_a_fixed_value() -> None:
    # crc32, not Python's per-process hash(): ingest replicas must agree.
    import zlib

    assert partition_for_key("device-42", 8) == zlib.crc32(b"device-42") % 8
    assert partition_for_key(42, 8) == zlib.crc32(b"42") % 8
    assert {partition_for_key(f"k{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_stream_ids() -> None:
    assert parse_stream_id(b"1700-3") == (1700, 3)
    assert parse_stream_id("1700") == (1700, 0)
    assert next_stream_id((1700, 3)) == (1700, 4)
    assert event_id(2, "1700-3", 5) == "2/1700-3/5"
    assert parse_record_id("2/1700-3") == (2, (1700, 3))
    with pytest.raises(ValueError, match="PARTITION/MS-SEQ"):
        parse_record_id("1700-3")


@given(st.lists(JSON_OBJECTS, min_size=1, max_size=20))
def test_ndjson_round_trips(objects: list[dict[str, object]]) -> None:
    body = b"\n".join(orjson.dumps(o) for o in objects) + b"\n"
    batch = parse_ndjson(body)
    assert [orjson.loads(line) for line in batch.lines] == objects
    assert orjson.loads(json_array_of_lines(b"\n".join(batch.lines))) == objects


def test_ndjson_errors_name_the_line_and_skip_blank_lines() -> None:
    with pytest.raises(BadInputError, match=r"^line 4: invalid JSON"):
        parse_ndjson(b'{"a":1}\n\n{"a":2}\n{"a":\n')
    with pytest.raises(BadInputError, match=r"^line 2: expected a JSON object, got list"):
        parse_ndjson(b'{"a":1}\n[1]\n')
    with pytest.raises(BadInputError, match="empty body"):
        parse_ndjson(b"\n \n")


def test_json_body_object_array_and_errors() -> None:
    assert parse_json_body(b'{\n "a": 1\n}').lines == [b'{"a":1}']
    assert parse_json_body(b'[{"a":1},{"b":2}]').lines == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(BadInputError, match="element 1: expected a JSON object, got int"):
        parse_json_body(b'[{"a":1},2]')
    with pytest.raises(BadInputError, match="invalid JSON"):
        parse_json_body(b"[")
    with pytest.raises(BadInputError, match="got str"):
        parse_json_body(b'"x"')
    with pytest.raises(BadInputError, match="empty array"):
        parse_json_body(b"[]")


def test_split_by_partition_keys_and_round_robin() -> None:
    batch = parse_ndjson(b'{"k":"a"}\n{"x":1}\n{"k":"b"}\n{"k":"a"}', key_field="k")
    groups = split_by_partition(batch, 4, round_robin_partition=3)
    assert sorted(i for indexes in groups.values() for i in indexes) == [0, 1, 2, 3]
    assert 1 in groups[3]  # no key: the round-robin partition
    assert partition_for_key("a", 4) in groups
    assert 0 in groups[partition_for_key("a", 4)]
    unkeyed = parse_ndjson(b'{"k":"a"}\n{"k":"b"}')
    assert split_by_partition(unkeyed, 4, round_robin_partition=2) == {2: [0, 1]}


def test_nested_key_field() -> None:
    batch = parse_ndjson(b'{"device":{"id":"d1"}}\n{"device":7}', key_field="device.id")
    assert batch.keys == ["d1", None]


def test_redis_url_parsing_and_password_from_env_wins() -> None:
    address = RedisAddress.from_url("redis://user:p%40ss@valkey:6380/2")
    assert (address.host, address.port, address.db, address.username, address.password) == (
        "valkey", 6380, 2, "user", "p@ss",
    )  # fmt: skip
    assert RedisAddress.from_url("redis://valkey", password="env").password == "env"
    with pytest.raises(ValueError, match="scheme"):
        RedisAddress.from_url("http://valkey")
