"""Whole-stream positions for subscribers: one stream ID per partition (pure).

A record's ID is `PARTITION/MS-SEQ`, the same on every output replica, so a position in the whole
stream is a vector of them, `from=0/1700-0,3/1700-5`: after that record in each named partition,
and from the beginning in every partition it does not name.
"""

from __future__ import annotations

from .codec import StreamId, format_stream_id, parse_record_id

# Nothing is before it: an unnamed partition starts here (stream IDs start at 0-1).
BEGINNING: StreamId = (0, 0)
MAX_SEQUENCE = 2**64 - 1

PositionVector = dict[int, StreamId]


def parse_position_vector(text: str, partitions: int) -> PositionVector:
    """`P/MS-SEQ[,P/MS-SEQ...]`; `0` is the empty vector (everything). Errors name the item."""
    if text == "0":
        return {}
    vector: PositionVector = {}
    for item in text.split(","):
        try:
            partition, entry_id = parse_record_id(item.strip())
        except ValueError:
            raise ValueError(
                f"from={text!r}: {item!r} is not PARTITION/MS-SEQ (expected 0, $ or "
                "PARTITION/MS-SEQ[,PARTITION/MS-SEQ...])"
            ) from None
        if not 0 <= partition < partitions:
            raise ValueError(
                f"from={text!r}: partition {partition} does not exist (the stream has "
                f"{partitions}: 0..{partitions - 1})"
            )
        if partition in vector:
            raise ValueError(f"from={text!r}: partition {partition} is named twice")
        vector[partition] = entry_id
    return vector


def format_position_vector(vector: PositionVector) -> str:
    """The `from=` text resuming after `vector`; `0` when it names nothing."""
    named = [f"{p}/{format_stream_id(i)}" for p, i in sorted(vector.items()) if i > BEGINNING]
    return ",".join(named) or "0"


def previous_stream_id(stream_id: StreamId) -> StreamId:
    """The largest ID below `stream_id` (BEGINNING for the first)."""
    ms, seq = stream_id
    if seq > 0:
        return ms, seq - 1
    return (ms - 1, MAX_SEQUENCE) if ms > 0 else BEGINNING


def durable_bound(last_delivered: StreamId, oldest_pending: StreamId | None) -> StreamId:
    """The largest ID at or below which every entry of a partition is durable in some output
    replica's files: the output group acknowledges only after fsync, so that is everything it
    delivered below its oldest pending entry (all it delivered when nothing is pending)."""
    if oldest_pending is None:
        return last_delivered
    return min(last_delivered, previous_stream_id(oldest_pending))
