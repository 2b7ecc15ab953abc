"""The backlog monitor: polls the worker group's backlog and gates ingest at the watermark."""

from __future__ import annotations

import asyncio
import logging

from ..codec import input_key, output_key
from ..config import OUTPUT_GROUP, WORKER_GROUP, RuntimeConfig
from ..probes import Liveness, Readiness
from ..resp import Reconnecting, RespConnection, RespError
from .writer import EntryWriter

log = logging.getLogger(__name__)


class BacklogMonitor:
    """Polls the backlog (undelivered + pending) of every stream: the worker group's on the input
    keys plus the output group's on the output keys, so a stalled output also closes the gate.

    Valkey counts entries; the event figure multiplies by this process's average events per
    entry, which is what maxBacklog (in events) is compared with. Each poll is also ingest's
    check on Valkey: a failed (or timed out) poll makes ingest not ready, the next good one ready.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        connection: Reconnecting,
        writer: EntryWriter,
        *,
        readiness: Readiness,
        liveness: Liveness,
    ) -> None:
        self.config = config
        self.connection = connection
        self.writer = writer
        self.readiness = readiness
        self.liveness = liveness
        self.backlog_events: dict[str, float] = {s.name: 0.0 for s in config.streams}
        self.open: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in config.streams}
        for event in self.open.values():
            event.set()

    def over_watermark(self, stream: str) -> bool:
        return not self.open[stream].is_set()

    async def poll_once(self) -> None:
        events_per_entry = max(
            1.0, self.writer.events_written / max(1, self.writer.entries_written)
        )
        connection = await self.connection.get()
        for stream in self.config.streams:
            entries = 0
            for partition in range(stream.partitions):
                entries += await self._partition_backlog(
                    connection, input_key(stream.name, partition), WORKER_GROUP
                )
                entries += await self._partition_backlog(
                    connection, output_key(stream.name, partition), OUTPUT_GROUP
                )
            backlog = entries * events_per_entry
            self.backlog_events[stream.name] = backlog
            if backlog > self.config.max_backlog_events:
                self.open[stream.name].clear()
            else:
                self.open[stream.name].set()

    @staticmethod
    async def _partition_backlog(connection: RespConnection, key: str, group: str) -> int:
        try:
            groups = await connection.execute("XINFO", "GROUPS", key)
        except RespError:
            return 0  # the key does not exist yet
        for flat in groups:
            info = dict(zip(flat[0::2], flat[1::2], strict=True))
            if info[b"name"] == group.encode():
                lag = info.get(b"lag")
                if lag is None:  # NULL after trims or explicit IDs: fall back to the length
                    lag = await connection.execute("XLEN", key)
                return int(lag) + int(info[b"pending"])
        return int(await connection.execute("XLEN", key))

    async def run(self, interval: float = 0.2) -> None:
        while True:
            self.liveness.beat()
            try:
                await self.poll_once()
                self.readiness.clear("valkey")
            except (OSError, RespError) as error:
                if "valkey" not in self.readiness.causes:
                    log.warning("backlog poll failed", extra={"error": str(error)})
                self.readiness.set("valkey", f"Valkey unavailable: {error}")
            await asyncio.sleep(interval)
