"""Dead letters: list, inspect and replay the entries workers gave up on.

A dead-letter entry (written by the worker's commit script) holds `src` (the input entry ID),
`n` and `d`: NDJSON records, each naming the failed event, its error and the event itself. Its
public ID is `PARTITION/MS-SEQ`, like an output record's. Replay moves the events back to the
same partition's input stream and deletes the dead letter in one script, so a replay that races
another (or is retried) never adds the events twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .codec import (
    FIELD_DATA,
    FIELD_SOURCE,
    dead_letter_key,
    decode_fields,
    input_key,
    parse_record_id,
    record_id,
)
from .config import StreamConfig
from .resp import RespConnection
from .scripts import Script

REPLAY_SCRIPT = Script(
    """
-- KEYS: dead letters, input (same partition hash tag). ARGV: dead-letter ID, count, NDJSON.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
return redis.call('XADD', KEYS[2], '*', 'n', ARGV[2], 'd', ARGV[3])
"""
)


class DeadLetterNotFoundError(LookupError):
    """No dead letter with this ID (never written, trimmed, or already replayed)."""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    source_entry: str
    records: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "sourceEntry": self.source_entry, "records": self.records}

    def replay_lines(self) -> list[bytes]:
        """The failed events as compact JSON lines (records without an event have none)."""
        return [orjson.dumps(r["event"]) for r in self.records if r.get("event") is not None]


def parse_dead_letter(partition: int, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    data = fields.get(FIELD_DATA, b"")
    return DeadLetter(
        id=record_id(partition, entry_id.decode()),
        source_entry=fields.get(FIELD_SOURCE, b"").decode(),
        records=[orjson.loads(line) for line in data.split(b"\n") if line],
    )


def parse_dead_letter_id(stream: StreamConfig, text: str) -> tuple[int, str]:
    """`PARTITION/MS-SEQ` -> (partition, entry ID); ValueError naming the ID when malformed."""
    try:
        partition, (ms, seq) = parse_record_id(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a dead-letter ID (expected PARTITION/MS-SEQ)") from None
    if not 0 <= partition < stream.partitions:
        raise ValueError(
            f"{text!r}: partition {partition} is outside 0..{stream.partitions - 1} "
            f"of stream {stream.name!r}"
        )
    return partition, f"{ms}-{seq}"


async def list_dead_letters(
    connection: RespConnection, stream: StreamConfig, *, limit: int = 100
) -> list[DeadLetter]:
    """Oldest first within each partition, partitions in order, at most `limit` in all."""
    found: list[DeadLetter] = []
    for partition in range(stream.partitions):
        if len(found) >= limit:
            break
        rows = await connection.execute(
            "XRANGE", dead_letter_key(stream.name, partition), "-", "+", "COUNT",
            limit - len(found),
        )  # fmt: skip
        found.extend(
            parse_dead_letter(partition, entry_id, decode_fields(fields))
            for entry_id, fields in rows
        )
    return found


async def get_dead_letter(
    connection: RespConnection, stream: StreamConfig, dead_letter_id: str
) -> DeadLetter:
    partition, entry_id = parse_dead_letter_id(stream, dead_letter_id)
    rows = await connection.execute(
        "XRANGE", dead_letter_key(stream.name, partition), entry_id, entry_id
    )
    if not rows:
        raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id!r} in {stream.name!r}")
    return parse_dead_letter(partition, rows[0][0], decode_fields(rows[0][1]))


async def replay_dead_letter(
    connection: RespConnection, stream: StreamConfig, dead_letter_id: str
) -> str | None:
    """Move one dead letter's events back to its input partition; returns the new input entry
    ID (None when it held no event, and is then only deleted)."""
    letter = await get_dead_letter(connection, stream, dead_letter_id)
    partition, entry_id = parse_dead_letter_id(stream, dead_letter_id)
    lines = letter.replay_lines()
    keys = [dead_letter_key(stream.name, partition), input_key(stream.name, partition)]
    if not lines:
        await connection.execute("XDEL", keys[0], entry_id)
        return None
    (reply,) = await REPLAY_SCRIPT.call_many(
        connection, [(keys, [entry_id, str(len(lines)), b"\n".join(lines)])]
    )
    if reply is None:  # replayed (or trimmed) by someone else since we read it
        raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id!r} in {stream.name!r}")
    assert isinstance(reply, bytes)
    return f"{partition}/{reply.decode()}"


async def replay_all(connection: RespConnection, stream: StreamConfig) -> list[str]:
    """Replay every dead letter present when called; returns the IDs replayed. Letters added
    meanwhile (a replayed event failing again) wait for the next call, so this always ends."""
    replayed: list[str] = []
    for partition in range(stream.partitions):
        key = dead_letter_key(stream.name, partition)
        newest = await connection.execute("XREVRANGE", key, "+", "-", "COUNT", 1)
        if not newest:
            continue
        while rows := await connection.execute("XRANGE", key, "-", newest[0][0], "COUNT", 500):
            for entry_id, _ in rows:
                letter_id = record_id(partition, entry_id.decode())
                try:
                    await replay_dead_letter(connection, stream, letter_id)
                except DeadLetterNotFoundError:
                    continue  # replayed concurrently: its events went back once, by the other
                replayed.append(letter_id)
    return replayed
