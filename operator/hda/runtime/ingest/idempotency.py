"""Idempotent ingest: a request sent again with the same `Idempotency-Key` is stored once.

A refusal is not a promise that nothing was written: a 503 can follow a write that reached the
primary (the required replicas did not confirm it in time, or the primary died before it
answered). A producer that sends the batch again must not store it twice, so a keyed request's
events are written by a script that first looks for the key's record and, when it is absent,
adds the entries and the record together. Both live in the partition's slot, so they replicate
(and fail over) as one: a promoted replica has either both or neither.

The record is per (key, partition): `DIGEST ENTRY_ID/COUNT ...`, the body's digest on that
partition and the entries it became, so the same request sent again gets the same receipt, and a
key used again for a different body is refused instead of answered with someone else's receipt.

On a stream that routes events by partition key, another body under the same key may touch
partitions the first never did, and no partition's record would see it. There a keyed request
also records its whole body's digest under the key alone, and ingest reads that record before
it writes anything: a different body is refused with nothing written. (Two requests with one
key and different bodies at the same moment can both pass that read; then each partition's
script still refuses the second on the partitions both touch.)
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Final

from ..codec import FIELD_TRACE, event_id, partition_tag

HEADER: Final = "Idempotency-Key"
QUERY: Final = "idempotencyKey"  # WebSocket clients that cannot set headers (browsers)
# On a success that repeats the receipt of an earlier request with the same key.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_KEY_LENGTH: Final = 200

# KEYS: the partition's input stream, the key's record. ARGV: seconds to remember, the digest,
# then (count, data, trace context or "") per entry. Answers {1, record} after writing, or
# {0, record} when the key was seen: nothing is written then.
WRITE_ONCE_SCRIPT: Final = f"""
local record = redis.call('GET', KEYS[2])
if record then return {{0, record}} end
local parts = {{ARGV[2]}}
for i = 3, #ARGV, 3 do
  local id
  if ARGV[i + 2] == '' then
    id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[i], 'd', ARGV[i + 1])
  else
    id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[i], 'd', ARGV[i + 1],
                    '{FIELD_TRACE.decode()}', ARGV[i + 2])
  end
  parts[#parts + 1] = id .. '/' .. ARGV[i]
end
record = table.concat(parts, ' ')
redis.call('SET', KEYS[2], record, 'EX', ARGV[1])
return {{1, record}}
"""


class BadIdempotencyKeyError(ValueError):
    """The key is empty, too long, or has characters other than printable ASCII."""


class IdempotencyConflictError(Exception):
    """The key was used before for a different body: answered 422, nothing written."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{HEADER} {key!r} was used for a different body within the idempotency window; "
            f"use a new key for a new request"
        )


def check_key(value: str, *, source: str = HEADER) -> str:
    """The key as given, or BadIdempotencyKeyError naming `source` and what is wrong."""
    if not value:
        raise BadIdempotencyKeyError(f"{source} is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise BadIdempotencyKeyError(
            f"{source} is {len(value)} characters long; at most {MAX_KEY_LENGTH} are allowed"
        )
    bad = next((c for c in value if not "!" <= c <= "~"), None)
    if bad is not None:
        raise BadIdempotencyKeyError(
            f"{source} may hold only printable ASCII without spaces; found {bad!r}"
        )
    return value


def record_key(stream: str, partition: int, key: str) -> str:
    """Where the key's record for one partition lives: in that partition's slot."""
    return f"{partition_tag(stream, partition)}:idem:{key}"


def request_record_key(stream: str, key: str) -> str:
    """Where the digest of a whole keyed request lives, on a stream that routes events by
    partition key (its slot is the key's own, apart from any partition)."""
    return f"hda:{stream}:idem-request:{key}"


def keyed_partition(key: str, partitions: int) -> int:
    """The partition a keyed request without partition keys goes to: the same on every resend
    and on every ingest pod (round robin would send a resend elsewhere, past its record)."""
    return zlib.crc32(key.encode()) % partitions


def digest(lines: list[bytes]) -> str:
    return hashlib.blake2b(b"\n".join(lines), digest_size=16).hexdigest()


@dataclass(frozen=True)
class WrittenRecord:
    """What one keyed request became on one partition."""

    digest: str
    entries: tuple[tuple[str, int], ...]  # (entry ID, events in it), in order
    written: bool  # False: the key was seen before and nothing was written now

    @classmethod
    def parse(cls, reply: object) -> WrittenRecord:
        if not isinstance(reply, list) or len(reply) != 2:
            raise ValueError(f"unexpected reply from the write-once script: {reply!r}")
        flag, record = reply
        text = record.decode() if isinstance(record, bytes) else str(record)
        head, *entries = text.split(" ")
        parsed = []
        for entry in entries:
            entry_id, _, count = entry.rpartition("/")
            parsed.append((entry_id, int(count)))
        return cls(head, tuple(parsed), int(flag) == 1)

    def event_id(self, partition: int, index: int) -> str:
        """The receipt ID of the request's `index`-th event on this partition."""
        for entry_id, count in self.entries:
            if index < count:
                return event_id(partition, entry_id, index)
            index -= count
        raise IndexError(f"event {index} is past the {len(self.entries)} entries recorded")
