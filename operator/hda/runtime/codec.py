"""Pure encoding rules of the data path: keys, partitions, stream IDs, request bodies, entries.

An input entry holds a batch of events as NDJSON in field `d` (count in `n`); each line is one
validated JSON object, so workers can pass batches through untouched and output can splice them
into a JSON array without re-encoding.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

StreamId = tuple[int, int]

FIELD_DATA = b"d"
FIELD_COUNT = b"n"
FIELD_SOURCE = b"src"
FIELD_ERROR = b"error"
FIELD_TRACE = b"tc"  # W3C trace contexts of sampled requests; absent unless tracing (tracing.py)


def partition_tag(stream: str, partition: int) -> str:
    """The hash tag shared by all keys of one partition, so one MULTI/script spans them (Cluster)."""
    return f"{{hda:{stream}:{partition}}}"


def input_key(stream: str, partition: int) -> str:
    return f"{partition_tag(stream, partition)}:in"


def output_key(stream: str, partition: int) -> str:
    return f"{partition_tag(stream, partition)}:out"


def dead_letter_key(stream: str, partition: int) -> str:
    return f"{partition_tag(stream, partition)}:dlq"


def parse_stream_id(text: str | bytes) -> StreamId:
    """`1700000000000-3` -> (1700000000000, 3); a bare `ms` means `ms-0`."""
    if isinstance(text, bytes):
        text = text.decode()
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def next_stream_id(stream_id: StreamId) -> StreamId:
    """The smallest ID after `stream_id` (what MINID must keep when this one is the last read)."""
    return stream_id[0], stream_id[1] + 1


def event_id(partition: int, entry_id: str, index: int) -> str:
    """Public ID of one event: partition / stream entry ID / index within the entry."""
    return f"{partition}/{entry_id}/{index}"


def record_id(partition: int, entry_id: str) -> str:
    """Public ID of one output entry (a segment record): partition / stream entry ID."""
    return f"{partition}/{entry_id}"


def parse_record_id(text: str) -> tuple[int, StreamId]:
    partition, _, entry_id = text.partition("/")
    if not entry_id:
        raise ValueError(f"{text!r} is not a record ID (expected PARTITION/MS-SEQ)")
    return int(partition), parse_stream_id(entry_id)


def partition_for_key(value: Any, partitions: int) -> int:
    """Stable across processes and restarts (unlike hash()): crc32 of the key's JSON text."""
    return zlib.crc32(key_bytes(value)) % partitions


def key_bytes(value: Any) -> bytes:
    """A key's identity as bytes: strings as themselves, anything else as its JSON text."""
    if isinstance(value, str):
        return value.encode()
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits
        return str(value).encode()


def lookup(event: dict[str, Any], path: str) -> Any:
    """Value at a dotted field path, or None when any step is missing."""
    if "." not in path:
        return event.get(path)
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


class BadInputError(ValueError):
    """A request body that is not what its Content-Type says; the message names where."""


@dataclass
class ParsedBatch:
    """Validated events of one request: compact JSON lines, and the parsed objects when needed."""

    lines: list[bytes]
    objects: list[dict[str, Any]] | None = None
    keys: list[Any] = field(default_factory=list)


def parse_ndjson(body: bytes, *, key_field: str | None = None) -> ParsedBatch:
    """One JSON object per line; blank lines are skipped; errors name the 1-based line."""
    raw_lines = body.split(b"\n")
    lines: list[bytes] = []
    line_numbers: list[int] = []
    for number, raw in enumerate(raw_lines, start=1):
        line = raw.strip()
        if line:
            lines.append(line)
            line_numbers.append(number)
    if not lines:
        raise BadInputError("empty body: expected at least one JSON object per line")
    loads = orjson.loads
    try:
        objects = [loads(line) for line in lines]
    except orjson.JSONDecodeError:
        for index, line in enumerate(lines):
            try:
                loads(line)
            except orjson.JSONDecodeError as error:
                raise BadInputError(f"line {line_numbers[index]}: invalid JSON: {error}") from None
        raise  # unreachable: the batch parse failed, so one line must fail
    for index, obj in enumerate(objects):
        if type(obj) is not dict:
            raise BadInputError(
                f"line {line_numbers[index]}: expected a JSON object, got {type(obj).__name__}"
            )
    keys = [lookup(obj, key_field) for obj in objects] if key_field else []
    return ParsedBatch(lines=lines, objects=objects, keys=keys)


def parse_json_body(body: bytes, *, key_field: str | None = None) -> ParsedBatch:
    """One JSON object, or an array of objects; errors name the 0-based array element."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadInputError(f"invalid JSON: {error}") from None
    if isinstance(value, dict):
        objects: list[Any] = [value]
    elif isinstance(value, list):
        objects = value
        if not objects:
            raise BadInputError("empty array: expected at least one JSON object")
        for index, obj in enumerate(objects):
            if type(obj) is not dict:
                raise BadInputError(
                    f"element {index}: expected a JSON object, got {type(obj).__name__}"
                )
    else:
        raise BadInputError(f"expected a JSON object or array, got {type(value).__name__}")
    dumps = orjson.dumps
    keys = [lookup(obj, key_field) for obj in objects] if key_field else []
    return ParsedBatch(lines=[dumps(obj) for obj in objects], objects=objects, keys=keys)


def split_by_partition(
    batch: ParsedBatch, partitions: int, round_robin_partition: int
) -> dict[int, list[int]]:
    """Event indexes per partition: keyed events by hash, the rest together round-robin."""
    if not batch.keys:
        return {round_robin_partition: list(range(len(batch.lines)))}
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(batch.keys):
        partition = round_robin_partition if key is None else partition_for_key(key, partitions)
        groups.setdefault(partition, []).append(index)
    return groups


def decode_fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def entry_lines(payload: bytes) -> list[bytes]:
    return payload.split(b"\n") if payload else []


def json_array_of_lines(payload: bytes) -> bytes:
    """NDJSON lines (each a complete JSON value without raw newlines) as one JSON array."""
    return b"[" + payload.replace(b"\n", b",") + b"]"
