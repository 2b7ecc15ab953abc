"""`hda worker`: consume input partitions with a consumer group, run the pipeline, commit.

The commit of one input entry (XADD of its results, XADD of its dead letters, XACK) runs as one
server-side script: atomic exactly like MULTI/EXEC (nothing interleaves, AOF and replicas get it
as one transaction), plus a guard MULTI/EXEC cannot express: the results are written only if the
XACK really acknowledged the entry. So when a slow-but-alive worker and the one that reclaimed
its entry both finish, exactly one output entry exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from .codec import (
    FIELD_COUNT,
    FIELD_DATA,
    FIELD_TRACE,
    dead_letter_key,
    decode_fields,
    input_key,
    output_key,
    parse_stream_id,
)
from .config import WORKER_GROUP, RuntimeConfig
from .durability import wait_durable
from .groups import ensure_groups
from .latency import worker_latency
from .metrics import Metrics
from .pipeline import EntryResult, Pipeline
from .probes import Liveness, Readiness, add_probe_routes, liveness_window
from .resp import Arg, FencedConnector, RedisAddress, RespConnection, RespError
from .retention import trim_dead_letters, trim_key
from .scripts import Script
from .supervise import run_until_stopped, stop_on_signals
from .tracing import SERVICE_WORKER, PipelineTracer

log = logging.getLogger(__name__)

# XREADGROUP's reply: [(key, [(entry ID, [field, value, ...] or None when deleted), ...]), ...]
ReadReply = list[tuple[bytes, list[tuple[bytes, list[bytes] | None]]]]

COMMIT_SCRIPT = Script(
    """
-- KEYS: input, output, dead letters. ARGV: group, then 6 per entry: input ID, result count,
-- results (NDJSON), dead-letter count, dead letters (NDJSON), trace context ('' for none).
local committed = 0
for i = 2, #ARGV, 6 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    if ARGV[i + 1] ~= '0' then
      if ARGV[i + 5] == '' then
        redis.call('XADD', KEYS[2], '*', 'src', ARGV[i], 'n', ARGV[i + 1], 'd', ARGV[i + 2])
      else
        redis.call('XADD', KEYS[2], '*', 'src', ARGV[i], 'n', ARGV[i + 1], 'd', ARGV[i + 2],
          'tc', ARGV[i + 5])
      end
    end
    if ARGV[i + 3] ~= '0' then
      redis.call('XADD', KEYS[3], '*', 'src', ARGV[i], 'n', ARGV[i + 3], 'd', ARGV[i + 4])
    end
    committed = committed + 1
  end
end
return committed
"""
)


def count_per_key(batch_size: int, keys: int) -> int:
    """XREADGROUP's COUNT applies to each key; batchSize is per call, so share it out."""
    return max(1, -(-batch_size // max(1, keys)))


@dataclass(frozen=True)
class Delivered:
    """One input entry as delivered to this consumer."""

    partition: int
    entry_id: bytes
    fields: dict[bytes, bytes] | None  # None: the entry was deleted or trimmed
    deliveries: int


def dead_letter_lines(
    result: EntryResult, stream: str, partition: int, entry_id: bytes
) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "stream": stream,
                "partition": partition,
                "entryId": entry_id.decode(),
                "index": failure.index,
                "error": failure.error,
                "event": orjson.Fragment(failure.line) if failure.line else None,
            }
        )
        for failure in result.failures
    ]


class Worker:
    def __init__(
        self,
        config: RuntimeConfig,
        address: RedisAddress,
        consumer: str,
        *,
        block_ms: int = 1000,
    ) -> None:
        self.config = config
        self.address = address
        self.consumer = consumer
        self.block_ms = block_ms
        self.pipeline = Pipeline(config.pipeline)
        self.keys: list[tuple[str, int, str]] = [
            (stream.name, partition, input_key(stream.name, partition))
            for stream in config.streams
            for partition in range(stream.partitions)
        ]
        self._by_key = {key.encode(): (stream, partition) for stream, partition, key in self.keys}
        self.metrics = Metrics()
        counter = self.metrics.counter
        self.entries = counter("hda_worker_entries_total", "Input entries committed", ["stream"])
        self.events = counter("hda_worker_events_total", "Events written to output", ["stream"])
        self.dead_letters = counter(
            "hda_worker_dead_letters_total", "Events dead-lettered", ["stream"]
        )
        self.failed_deliveries = counter(
            "hda_worker_failed_deliveries_total", "Entries left for retry", ["stream"]
        )
        for stream in config.streams:  # from 0, so the first dead letter is an increase
            self.dead_letters.labels(stream=stream.name)
        self.latency = worker_latency(self.metrics)
        self.readiness = Readiness(self.metrics, valkey="connecting to Valkey")
        self.liveness = Liveness(liveness_window(address.command_timeout, block_ms / 1000))
        self._connector = FencedConnector(address)
        self.tracing = PipelineTracer(config.tracing, SERVICE_WORKER, consumer)

    # --- processing ---

    def _plan(self, stream: str, item: Delivered, trace: bytes) -> list[Arg] | None:
        """Script arguments committing one entry, or None to leave it pending for a retry;
        `trace` goes into the output entry of a traced input entry."""
        if item.fields is None:
            return [item.entry_id, "0", "", "0", "", ""]
        trace = trace if FIELD_TRACE in item.fields else b""
        payload = item.fields.get(FIELD_DATA, b"")
        if self.pipeline.is_passthrough:
            return [item.entry_id, item.fields.get(FIELD_COUNT, b"0"), payload, "0", "", trace]
        entry_ms = parse_stream_id(item.entry_id)[0]
        result = self.pipeline.run(payload.split(b"\n") if payload else [], entry_ms)
        if result.failures and item.deliveries < self.config.max_deliveries:
            self.failed_deliveries.labels(stream=stream).inc()
            log.warning(
                "entry failed; left pending for a retry",
                extra={
                    "stream": stream,
                    "entry": item.entry_id.decode(),
                    "deliveries": item.deliveries,
                    "error": result.failures[0].error,
                },
            )
            return None
        dead = dead_letter_lines(result, stream, item.partition, item.entry_id)
        if dead:
            self.dead_letters.labels(stream=stream).inc(len(dead))
            log.warning(
                "events dead-lettered",
                extra={"stream": stream, "entry": item.entry_id.decode(), "count": len(dead)},
            )
        return [
            item.entry_id,
            str(len(result.lines)),
            b"\n".join(result.lines),
            str(len(dead)),
            b"\n".join(dead),
            trace,
        ]

    async def process(
        self, connection: RespConnection, batch: dict[tuple[str, int], list[Delivered]]
    ) -> int:
        """Run the pipeline over delivered entries and commit them, one script call per partition."""
        entries = (item.fields for items in batch.values() for item in items)
        with self.tracing.batch_span("hda.worker.batch", entries) as trace:
            return await self._process(connection, batch, trace)

    async def _process(
        self,
        connection: RespConnection,
        batch: dict[tuple[str, int], list[Delivered]],
        trace: bytes,
    ) -> int:
        calls: list[tuple[list[str], list[Arg]]] = []
        counted: list[tuple[str, int, list[bytes]]] = []
        for (stream, partition), items in batch.items():
            args: list[Arg] = [WORKER_GROUP]
            events = 0
            accepted: list[bytes] = []
            for item in items:
                planned = self._plan(stream, item, trace)
                if planned is not None:
                    args.extend(planned)
                    events += int(planned[1])
                    accepted.append(item.entry_id)
            if len(args) > 1:
                keys = [
                    input_key(stream, partition),
                    output_key(stream, partition),
                    dead_letter_key(stream, partition),
                ]
                calls.append((keys, args))
                counted.append((stream, events, accepted))
        if not calls:
            return 0
        replies = await COMMIT_SCRIPT.call_many(connection, calls)
        # Not done (no further reads) until the commit is as durable as `acknowledge` asks; on a
        # failover the new primary still has the entries pending for us, and we commit again.
        await wait_durable(connection, self.config.acknowledge)
        committed = 0
        for (stream, events, accepted), reply in zip(counted, replies, strict=True):
            committed += int(reply)
            self.entries.labels(stream=stream).inc(int(reply))
            self.events.labels(stream=stream).inc(events)
            self.latency.observe(stream, accepted)
        return committed

    def _group_reply(self, reply: ReadReply | None) -> dict[tuple[str, int], list[Delivered]]:
        batch: dict[tuple[str, int], list[Delivered]] = {}
        for key, entries in reply or []:
            stream, partition = self._by_key[key]
            batch[(stream, partition)] = [
                Delivered(partition, entry_id, decode_fields(fields) if fields else None, 1)
                for entry_id, fields in entries
            ]
        return batch

    # --- reclaiming ---

    async def _deliveries(
        self, connection: RespConnection, key: str, ids: list[bytes]
    ) -> dict[bytes, int]:
        if not ids:
            return {}
        rows = await connection.execute(
            "XPENDING", key, WORKER_GROUP, ids[0], ids[-1], len(ids) * 2 + 10, self.consumer
        )
        return {row[0]: int(row[3]) for row in rows}

    async def recover_own_pending(self, connection: RespConnection) -> int:
        """After a restart under the same name: take back what this consumer had in flight."""
        recovered = 0
        for stream, partition, key in self.keys:
            start: bytes | str = "-"
            while True:
                rows = await connection.execute(
                    "XPENDING", key, WORKER_GROUP, start, "+", 500, self.consumer
                )
                if not rows:
                    break
                ids = [row[0] for row in rows]
                claimed = await connection.execute(
                    "XCLAIM", key, WORKER_GROUP, self.consumer, 0, *ids
                )
                counts = {row[0]: int(row[3]) + 1 for row in rows}  # XCLAIM counted one more
                items = [
                    Delivered(
                        partition,
                        entry_id,
                        decode_fields(fields) if fields else None,
                        counts[entry_id],
                    )
                    for entry_id, fields in claimed
                    if entry_id is not None
                ]
                recovered += await self.process(connection, {(stream, partition): items})
                self.liveness.beat()
                start = b"(" + ids[-1]
        return recovered

    async def claim_idle(self, connection: RespConnection) -> int:
        """XAUTOCLAIM entries idle longer than claimIdle (dead consumers, failed entries)."""
        min_idle_ms = int(self.config.claim_idle_seconds * 1000)
        claimed_total = 0
        for stream, partition, key in self.keys:
            cursor: bytes = b"0-0"
            for _ in range(100):  # bounded: each call scans at most 10x COUNT
                reply = await connection.execute(
                    "XAUTOCLAIM",
                    key,
                    WORKER_GROUP,
                    self.consumer,
                    min_idle_ms,
                    cursor,
                    "COUNT",
                    100,
                )
                cursor, entries = reply[0], reply[1]
                entries = [(entry_id, fields) for entry_id, fields in entries if entry_id]
                if entries:
                    ids = [entry_id for entry_id, _ in entries]
                    counts = await self._deliveries(connection, key, ids)
                    items = [
                        Delivered(
                            partition,
                            entry_id,
                            decode_fields(fields) if fields else None,
                            counts.get(entry_id, 1),
                        )
                        for entry_id, fields in entries
                    ]
                    claimed_total += len(items)
                    log.info("reclaimed idle entries", extra={"key": key, "count": len(items)})
                    await self.process(connection, {(stream, partition): items})
                    self.liveness.beat()
                if cursor == b"0-0":
                    break
        return claimed_total

    # --- lifecycle ---

    async def run(self, stop: asyncio.Event) -> None:
        # Fenced: a read this process gave up on must not assign entries to us after we
        # recovered our pending ones (below); the claim loop would find them, but only later.
        connection = await self._connector.connect()
        trimmer: asyncio.Task[None] | None = None
        try:
            await ensure_groups(connection, self.config)
            trimmer = asyncio.create_task(self._trim_forever())
            recovered = await self.recover_own_pending(connection)
            if recovered:
                log.info("recovered own pending entries", extra={"count": recovered})
            self.readiness.clear("valkey")
            read_command: list[Arg] = [
                "XREADGROUP", "GROUP", WORKER_GROUP, self.consumer,
                "COUNT", count_per_key(self.config.batch_size, len(self.keys)),
                "BLOCK", self.block_ms, "STREAMS",
                *[key for _, _, key in self.keys],
                *([">"] * len(self.keys)),
            ]  # fmt: skip
            block_seconds = self.block_ms / 1000
            claim_every = max(0.05, self.config.claim_idle_seconds / 2)
            next_claim = time.monotonic() + claim_every
            while not stop.is_set():
                self.liveness.beat()
                # The blocking read is never cancelled: entries it returns are ours to finish
                # (after a deadline they are pending for us, recovered on the next connection).
                reply = await connection.execute(*read_command, block_seconds=block_seconds)
                if reply:
                    await self.process(connection, self._group_reply(reply))
                if time.monotonic() >= next_claim:
                    await self.claim_idle(connection)
                    next_claim = time.monotonic() + claim_every
            await self._leave_group(connection)
        finally:
            # not ready until Valkey is back and our pending entries are recovered
            self.readiness.set("valkey", "reconnecting to Valkey")
            if trimmer is not None:
                trimmer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await trimmer
            connection.close()

    async def _leave_group(self, connection: RespConnection) -> None:
        """Delete this consumer only when nothing is pending for it (DELCONSUMER drops its PEL)."""
        pending = 0
        for _, _, key in self.keys:
            rows = await connection.execute(
                "XPENDING", key, WORKER_GROUP, "-", "+", 1, self.consumer
            )
            pending += len(rows)
        if pending:
            log.info("keeping consumer: entries still pending", extra={"consumer": self.consumer})
            return
        await connection.pipeline(
            [("XGROUP", "DELCONSUMER", key, WORKER_GROUP, self.consumer) for _, _, key in self.keys]
        )
        log.info("consumer removed", extra={"consumer": self.consumer})

    async def _trim_forever(self) -> None:
        connection: RespConnection | None = None
        while True:
            try:
                if connection is None or connection.is_closed:
                    connection = await RespConnection.connect(self.address)
                await trim_streams(connection, self.config)
            except (OSError, RespError) as error:
                log.warning("trim failed", extra={"error": str(error)})
                if connection is not None:
                    connection.close()
                connection = None
            await asyncio.sleep(self.config.trim_interval_seconds)


async def trim_streams(connection: RespConnection, config: RuntimeConfig) -> int:
    """Trim every input and output partition behind its slowest group, and every dead-letter
    stream to its own limits (idempotent)."""
    removed = 0
    now_ms = int(time.time() * 1000)
    for stream in config.streams:
        for partition in range(stream.partitions):
            for key in (input_key(stream.name, partition), output_key(stream.name, partition)):
                removed += await trim_key(
                    connection,
                    key,
                    now_ms=now_ms,
                    max_age_seconds=stream.retention_max_age_seconds,
                    max_length=stream.retention_max_length,
                )
            removed += await trim_dead_letters(
                connection,
                dead_letter_key(stream.name, partition),
                now_ms=now_ms,
                max_age_seconds=config.dead_letter_max_age_seconds,
                max_length=config.dead_letter_max_length,
            )
    return removed


async def serve_worker(
    config: RuntimeConfig, address: RedisAddress, *, consumer: str, host: str, port: int
) -> None:
    """Run one worker until SIGTERM/SIGINT; probes and metrics on `port` (0: none)."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    worker = Worker(config, address, consumer)
    runner: web.AppRunner | None = None
    if port:
        app = web.Application()
        add_probe_routes(
            app,
            liveness=worker.liveness,
            readiness=worker.readiness,
            render_metrics=worker.metrics.render,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("worker started", extra={"consumer": consumer})
    try:
        await run_until_stopped(
            lambda: worker.run(stop),
            stop,
            "worker",
            liveness=worker.liveness,
            readiness=worker.readiness,
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        worker.tracing.shutdown()
    log.info("worker stopped", extra={"consumer": consumer})
