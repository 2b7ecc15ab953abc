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
    """Print-callback every record from `start` on; resumes after the last record seen when the
    connection drops. Returns the number of events seen once `max_events` is reached or nothing
    arrived for `idle_timeout` seconds."""
    position = start
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
                        position = str(record.get("id", position))
                        events += len(record.get("events", ()))
                        on_record(data)
            except TimeoutError:
                return events
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError):
                pass
            await asyncio.sleep(_RECONNECT_DELAY)
    return events
