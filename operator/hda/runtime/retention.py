"""Trimming behind the slowest consumer group: the pure computation, then the Valkey calls.

XTRIM ignores the pending list (shared/notes/dataplane.md), so the safe MINID is the oldest ID
any group still needs: its oldest pending entry, or the one after its last-delivered ID.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .codec import StreamId, format_stream_id, next_stream_id, parse_stream_id
from .resp import RespConnection, RespError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupPosition:
    last_delivered: StreamId
    oldest_pending: StreamId | None
    name: bytes = b""


def safe_minid(groups: list[GroupPosition]) -> StreamId | None:
    """Oldest ID a group still needs; None (never trim) while no group reads the stream."""
    if not groups:
        return None
    return min(
        group.oldest_pending
        if group.oldest_pending is not None
        else next_stream_id(group.last_delivered)
        for group in groups
    )


def retention_minid(
    *,
    now_ms: int,
    max_age_seconds: float | None,
    max_length: int | None,
    length: int,
    first_id: StreamId | None,
    last_id: StreamId | None,
) -> StreamId | None:
    """The MINID that the retention policy alone asks for; None when it asks for nothing.

    Streams have no index seek, so the length cut is estimated by interpolating entry times
    between the first and last entry (retention is approximate by nature, like `MAXLEN ~`).
    """
    cuts: list[StreamId] = []
    if max_age_seconds is not None:
        cuts.append((max(0, now_ms - int(max_age_seconds * 1000)), 0))
    if max_length is not None and length > max_length and first_id and last_id:
        excess_fraction = (length - max_length) / length
        cut_ms = first_id[0] + int((last_id[0] - first_id[0]) * excess_fraction)
        cuts.append((cut_ms, 0) if cut_ms > first_id[0] else next_stream_id(first_id))
    return max(cuts) if cuts else None


def trim_minid(
    safe: StreamId | None, retention: StreamId | None, *, has_retention: bool
) -> StreamId | None:
    """Trim to the retention cut, never past the slowest group. Without a retention policy,
    consumed entries are dropped as soon as every group has passed them."""
    if safe is None:
        return None
    if not has_retention:
        return safe
    if retention is None:
        return None
    return min(safe, retention)


def _flat_map(flat: list[object]) -> dict[bytes, object]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}  # type: ignore[misc]


async def group_positions(connection: RespConnection, key: str) -> list[GroupPosition]:
    try:
        groups = await connection.execute("XINFO", "GROUPS", key)
    except RespError:
        return []  # no such key yet
    positions = []
    for flat in groups:
        info = _flat_map(flat)
        name = info[b"name"]
        assert isinstance(name, bytes)
        last_delivered = parse_stream_id(info[b"last-delivered-id"])  # type: ignore[arg-type]
        oldest: StreamId | None = None
        if info.get(b"pending"):
            summary = await connection.execute("XPENDING", key, name)
            if summary and summary[1] is not None:
                oldest = parse_stream_id(summary[1])
        positions.append(GroupPosition(last_delivered, oldest, name))
    return positions


async def trim_key(
    connection: RespConnection,
    key: str,
    *,
    now_ms: int,
    max_age_seconds: float | None,
    max_length: int | None,
) -> int:
    """Trim one stream key; returns the number of entries removed."""
    has_retention = max_age_seconds is not None or max_length is not None
    safe = safe_minid(await group_positions(connection, key))
    retention: StreamId | None = None
    if safe is not None and has_retention:
        length = int(await connection.execute("XLEN", key))
        first = await connection.execute("XRANGE", key, "-", "+", "COUNT", 1)
        last = await connection.execute("XREVRANGE", key, "+", "-", "COUNT", 1)
        retention = retention_minid(
            now_ms=now_ms,
            max_age_seconds=max_age_seconds,
            max_length=max_length,
            length=length,
            first_id=parse_stream_id(first[0][0]) if first else None,
            last_id=parse_stream_id(last[0][0]) if last else None,
        )
    minid = trim_minid(safe, retention, has_retention=has_retention)
    if minid is None:
        return 0
    removed = int(await connection.execute("XTRIM", key, "MINID", format_stream_id(minid)))
    if removed:
        log.debug(
            "trimmed", extra={"key": key, "minid": format_stream_id(minid), "removed": removed}
        )
    return removed


def dead_letter_minid(*, now_ms: int, max_age_seconds: float) -> StreamId:
    """The age cut of a dead-letter stream: nothing reads it, so no group bounds the trim."""
    return (max(0, now_ms - int(max_age_seconds * 1000)), 0)


async def trim_dead_letters(
    connection: RespConnection,
    key: str,
    *,
    now_ms: int,
    max_age_seconds: float,
    max_length: int,
) -> int:
    """Trim one dead-letter stream to its age and length limits; returns entries removed."""
    minid = format_stream_id(dead_letter_minid(now_ms=now_ms, max_age_seconds=max_age_seconds))
    removed = int(await connection.execute("XTRIM", key, "MINID", minid))
    removed += int(await connection.execute("XTRIM", key, "MAXLEN", str(max_length)))
    if removed:
        log.debug("dead letters trimmed", extra={"key": key, "removed": removed})
    return removed
