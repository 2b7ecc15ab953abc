"""`hda tail`: follow an output stream's subscribe endpoint and print each record as it lands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import aiohttp
import orjson

_RECONNECT_DELAY: Final = 1.0


async def follow(
    url: str,
    on_record: Callable[[bytes], None],
    *,
    start: str = "0",
    max_events: int | None = None,
    idle_timeout: float | None = None,
    token: str | None = None,
) -> int:
    """Print-callback every record from `start` on (`0`, `$` or a position vector); when the
    connection drops it resumes after the last record seen of each partition. Returns the number
    of events seen once `max_events` is reached or nothing arrived for `idle_timeout` seconds."""
    position = start
    seen: dict[int, str] = {}  # partition -> the last entry ID seen
    events = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        while max_events is None or events < max_events:
            try:
                async with session.ws_connect(
                    url, params={"from": position}, headers=headers, heartbeat=30
                ) as ws:
                    while max_events is None or events < max_events:
                        message = await ws.receive(timeout=idle_timeout)
                        if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                            break
                        data = (
                            message.data
                            if isinstance(message.data, bytes)
                            else message.data.encode()
                        )
                        record = orjson.loads(data)
                        partition, _, entry_id = str(record.get("id", "")).partition("/")
                        if entry_id:
                            seen[int(partition)] = entry_id
                            position = resume_position(start, seen)
                        events += len(record.get("events", ()))
                        on_record(data)
            except TimeoutError:
                return events
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError):
                pass
            await asyncio.sleep(_RECONNECT_DELAY)
    return events


def resume_position(start: str, seen: dict[int, str]) -> str:
    """`start` with the last record seen of each partition put in its place: partitions named in
    neither start from the beginning (`from=` semantics)."""
    vector: dict[int, str] = {}
    if start not in ("0", "$", ""):
        for item in start.split(","):
            partition, _, entry_id = item.strip().partition("/")
            vector[int(partition)] = entry_id
    vector.update(seen)
    return ",".join(f"{p}/{entry_id}" for p, entry_id in sorted(vector.items())) or start
