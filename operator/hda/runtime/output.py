"""`hda output`: output streams -> fsync'd segment files -> XACK, plus WebSocket subscribers
(every replica serves the whole stream, see `subscribe.py`).

Exactly once across crashes: within a partition this consumer writes entries in ID order (its own
pending entries first after a restart, then new ones; it never claims another replica's
entries), so "the last record of partition P in the files" splits everything it was ever
delivered into durable (ack without rewriting) and not (write now).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web

from .auth import BearerTokens
from .codec import (
    FIELD_COUNT,
    FIELD_DATA,
    FIELD_SOURCE,
    FIELD_TRACE,
    StreamId,
    decode_fields,
    output_key,
    parse_stream_id,
)
from .config import OUTPUT_GROUP, RuntimeConfig, StreamConfig
from .durability import wait_durable
from .groups import ensure_groups
from .latency import output_latency
from .metrics import Metrics
from .positions import BEGINNING, PositionVector, parse_position_vector
from .probes import Liveness, Readiness, add_probe_routes, liveness_window
from .resp import Arg, FencedConnector, RedisAddress, RespConnection, raise_errors
from .segment_retention import delete_segments, scan_volume, segments_to_delete
from .segments import (
    FilePosition,
    SegmentRangeReader,
    SegmentWriter,
    encode_record,
    is_disk_error,
    record_position,
    resume_segment,
)
from .subscribe import (
    CLOSE_SLOW_SUBSCRIBER,
    MARK_PREFIX,
    PeerDirectory,
    SubscribeGateway,
    close_reason,
    history_end_frame,
)
from .supervise import run_until_stopped
from .tracing import SERVICE_OUTPUT, PipelineTracer
from .volume import VolumeGauges, volume_usage
from .worker import count_per_key

log = logging.getLogger(__name__)

READ_BLOCK_SECONDS = 1.0
DISK_RETRY_MAX_SECONDS = 5.0
DEFAULT_VOLUME_SHARE = 0.75  # segments may fill this much of the volume (alert fires at 85%)
RETENTION_INTERVAL_SECONDS = 10.0


class DiskWriteError(Exception):
    """Segments of a stream could not be written or synced (full disk, I/O error); the files
    were rolled back to their durable position and nothing of the batch was acknowledged."""

    def __init__(self, stream: str, directory: Path, cause: OSError, discarded: int) -> None:
        self.stream = stream
        self.directory = directory
        self.cause = cause
        self.discarded = discarded  # bytes written since the last fsync, cut by the rollback
        code = errno.errorcode.get(cause.errno or 0, "unknown")
        self.code = code
        super().__init__(f"cannot write segments of {stream!r} in {directory}: [{code}] {cause}")


ReadReply = list[tuple[bytes, list[tuple[bytes, list[bytes] | None]]]]


@dataclass(eq=False)  # identity semantics: kept in a set
class Subscriber:
    limit: int
    queue: collections.deque[bytes] = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    gone: bool = False  # the client closed, or the server is shutting down


class SubscriberHub:
    """Fans durable records out to live subscribers without ever waiting for them."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[Subscriber]] = collections.defaultdict(set)

    def register(self, stream: str, limit: int) -> Subscriber:
        subscriber = Subscriber(limit)
        self.subscribers[stream].add(subscriber)
        return subscriber

    def unregister(self, stream: str, subscriber: Subscriber) -> None:
        self.subscribers[stream].discard(subscriber)

    def shut_down(self) -> None:
        for subscribers in self.subscribers.values():
            for subscriber in subscribers:
                subscriber.gone = True
                subscriber.wakeup.set()

    @staticmethod
    def mark(subscriber: Subscriber, frame: bytes) -> None:
        """Queue a mark frame behind everything published to this subscriber so far."""
        if not subscriber.overflowed:
            subscriber.queue.append(frame)
            subscriber.wakeup.set()

    def publish(self, stream: str, lines: list[bytes]) -> None:
        for subscriber in self.subscribers.get(stream, ()):
            if subscriber.overflowed:
                continue
            if len(subscriber.queue) + len(lines) > subscriber.limit:
                subscriber.overflowed = True  # the handler closes it; the pipeline never waits
                subscriber.queue.clear()
            else:
                subscriber.queue.extend(lines)
            subscriber.wakeup.set()


class OutputProcess:
    def __init__(
        self,
        config: RuntimeConfig,
        address: RedisAddress,
        consumer: str,
        data_dir: Path,
        *,
        peers: PeerDirectory,
        tokens: list[str] | None = None,
    ) -> None:
        self.config = config
        self.address = address
        self.consumer = consumer
        self.data_dir = data_dir
        self.writers = {
            stream.name: SegmentWriter(
                data_dir / stream.name,
                stream.name,
                max_bytes=config.segment_max_bytes,
                max_age_seconds=config.segment_max_age_seconds,
            )
            for stream in config.streams
        }
        self.keys: list[tuple[str, int, str]] = [
            (stream.name, partition, output_key(stream.name, partition))
            for stream in config.streams
            for partition in range(stream.partitions)
        ]
        self._by_key = {key.encode(): (stream, partition) for stream, partition, key in self.keys}
        self.hub = SubscriberHub()
        self.metrics = Metrics()
        counter = self.metrics.counter
        self.entries = counter("hda_output_entries_total", "Entries made durable", ["stream"])
        self.events = counter("hda_output_events_total", "Events made durable", ["stream"])
        self.subscribers = self.metrics.gauge(
            "hda_output_subscribers", "Live subscribers", ["stream"]
        )
        self.slow_disconnects = counter(
            "hda_output_slow_disconnects_total", "Slow subscribers cut", ["stream"]
        )
        self.disk_errors = counter(
            "hda_output_disk_errors_total",
            "Failed segment writes or fsyncs (rolled back, not acknowledged), by errno",
            ["stream", "errno"],
        )
        self.retention_deleted_bytes = counter(
            "hda_output_retention_deleted_bytes_total",
            "Bytes of segment files deleted by retention",
        )
        for stream in config.streams:  # present from the start, 0 until someone subscribes
            self.subscribers.labels(stream=stream.name)
        self.volume = VolumeGauges(self.metrics, data_dir)
        self.latency = output_latency(self.metrics)
        self.readiness = Readiness(self.metrics, valkey="connecting to Valkey")
        self.liveness = Liveness(liveness_window(address.command_timeout, READ_BLOCK_SECONDS))
        self._connector = FencedConnector(address)
        self.tracing = PipelineTracer(config.tracing, SERVICE_OUTPUT, consumer)
        self.durable_last: dict[tuple[str, int], StreamId] = {}
        # stream -> subscriber -> the segment it reads history from (retention keeps it)
        self.history_readers: dict[str, dict[int, int]] = {s.name: {} for s in config.streams}
        self.tokens = BearerTokens(tokens or [], accept_in_query=config.accept_token_in_query)
        self.gateway = SubscribeGateway(
            peers,
            self.tokens,
            address,
            self.slow_disconnects,
            config.subscriber_max_buffered_entries,
        )

    # --- the durable path ---

    def recover_files(self) -> None:
        for stream, writer in self.writers.items():
            for partition, last in writer.recover().items():
                self.durable_last[(stream, partition)] = last
        log.info(
            "segments recovered",
            extra={
                "last": {f"{s}/{p}": f"{i[0]}-{i[1]}" for (s, p), i in self.durable_last.items()}
            },
        )

    async def write_batch(self, connection: RespConnection, reply: ReadReply) -> int:
        """Append, fsync, publish, then XACK; entries already durable are only acked."""
        records: dict[str, list[tuple[int, StreamId, bytes]]] = collections.defaultdict(list)
        acks: dict[str, list[bytes]] = collections.defaultdict(list)
        events: dict[str, int] = collections.defaultdict(int)
        sources: dict[str, list[bytes]] = collections.defaultdict(list)  # input IDs: latency
        traced: list[dict[bytes, bytes]] = []  # fields of entries that carry a trace context
        for key, entries in reply:
            stream, partition = self._by_key[key]
            durable = self.durable_last.get((stream, partition))
            for entry_id, flat in entries:
                acks[key.decode()].append(entry_id)
                parsed_id = parse_stream_id(entry_id)
                if (durable is not None and parsed_id <= durable) or not flat:
                    continue  # written before a crash (or trimmed): acknowledge only
                fields = decode_fields(flat)
                if FIELD_TRACE in fields:
                    traced.append(fields)
                count = int(fields.get(FIELD_COUNT, b"0"))
                line = encode_record(
                    partition,
                    entry_id,
                    fields.get(FIELD_SOURCE, b""),
                    count,
                    fields.get(FIELD_DATA, b""),
                )
                records[stream].append((partition, parsed_id, line))
                sources[stream].append(fields.get(FIELD_SOURCE, b""))
                events[stream] += count
        stream = ""
        with self.tracing.batch_span("hda.output.write", traced):
            try:
                for stream, stream_records in records.items():
                    self.writers[stream].append(stream_records)
                for stream in records:
                    self.writers[stream].sync()
            except OSError as error:
                if not is_disk_error(error):
                    raise
                discarded = self._roll_back_all()
                raise DiskWriteError(
                    stream, self.writers[stream].directory, error, discarded
                ) from error
        for stream, stream_records in records.items():
            for partition, parsed_id, _ in stream_records:
                self.durable_last[(stream, partition)] = parsed_id
            self.hub.publish(stream, [line[:-1] for _, _, line in stream_records])
            self.entries.labels(stream=stream).inc(len(stream_records))
            self.events.labels(stream=stream).inc(events[stream])
            self.latency.observe(stream, sources[stream])
        if acks:
            raise_errors(
                await connection.pipeline(
                    [("XACK", key, OUTPUT_GROUP, *ids) for key, ids in acks.items()]
                )
            )
        return sum(len(r) for r in records.values())

    def _roll_back_all(self) -> int:
        """Every stream, not only the failed one: the others may hold unsynced appends of this
        batch, which the retry would otherwise write a second time. Returns the bytes cut."""
        discarded = 0
        for writer in self.writers.values():
            with contextlib.suppress(OSError):  # still broken: the next append retries it
                discarded += writer.rollback()
        return discarded

    async def write_until_durable(
        self, connection: RespConnection, reply: ReadReply, stop: asyncio.Event
    ) -> bool:
        """`write_batch`, retried while the disk refuses (not ready meanwhile, nothing acked);
        False if asked to stop first (the entries stay pending for this consumer)."""
        delay = 0.2
        while True:
            try:
                await self.write_batch(connection, reply)
            except DiskWriteError as error:
                self.disk_errors.labels(stream=error.stream, errno=error.code).inc()
                if "disk" not in self.readiness.causes:
                    log.error(
                        "segment write failed; rolled back, not acknowledging until it succeeds",
                        extra={
                            "stream": error.stream,
                            "dir": str(error.directory),
                            "error": str(error.cause),
                            "errno": error.code,
                            "rolled_back_bytes": error.discarded,
                        },
                    )
                self.readiness.set("disk", str(error))
                self.liveness.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
                delay = min(delay * 2, DISK_RETRY_MAX_SECONDS)
                continue
            if "disk" in self.readiness.causes:
                log.info("segment writes succeed again; acknowledging")
                self.readiness.clear("disk")
            return True

    async def drain_own_pending(self, connection: RespConnection, stop: asyncio.Event) -> None:
        """Re-read this consumer's pending entries (history) in ID order until none is left."""
        cursors: list[Arg] = ["0"] * len(self.keys)
        while True:
            reply = await connection.execute(
                "XREADGROUP", "GROUP", OUTPUT_GROUP, self.consumer, "COUNT", 1000, "STREAMS",
                *[key for _, _, key in self.keys], *cursors,
            )  # fmt: skip
            entries = [(key, items) for key, items in reply or [] if items]
            if entries:
                await wait_durable(connection, self.config.acknowledge)
            if not entries or not await self.write_until_durable(connection, entries, stop):
                return
            self.liveness.beat()
            last_by_key = {key: items[-1][0] for key, items in entries}
            cursors = [
                last_by_key.get(key.encode(), cursor)
                for (_, _, key), cursor in zip(self.keys, cursors, strict=True)
            ]

    async def run(self, stop: asyncio.Event) -> None:
        # Fenced: a `>` read given up on must not assign entries to us after the drain below,
        # or they would be written after newer ones and then taken for durable.
        connection = await self._connector.connect()
        try:
            await ensure_groups(connection, self.config)
            await self.drain_own_pending(connection, stop)
            self.readiness.clear("valkey")
            read_command: list[Arg] = [
                "XREADGROUP", "GROUP", OUTPUT_GROUP, self.consumer,
                # output's work per entry is small: four worker batches per call
                "COUNT", count_per_key(self.config.batch_size * 4, len(self.keys)),
                "BLOCK", int(READ_BLOCK_SECONDS * 1000), "STREAMS",
                *[key for _, _, key in self.keys], *([">"] * len(self.keys)),
            ]  # fmt: skip
            while not stop.is_set():
                self.liveness.beat()
                reply = await connection.execute(*read_command, block_seconds=READ_BLOCK_SECONDS)
                if reply:
                    # Only entries a failover cannot take back reach the files: one lost here
                    # would be committed again by a worker under a new ID, and written twice.
                    await wait_durable(connection, self.config.acknowledge)
                    await self.write_until_durable(connection, reply, stop)
        finally:
            # not ready until Valkey is back and our pending entries are settled
            self.readiness.set("valkey", "reconnecting to Valkey")
            connection.close()

    def retention_pass(self) -> int:
        """Delete segments past the age or total-size limit; returns the bytes freed."""
        max_bytes = self.config.segment_retention_max_bytes
        if max_bytes is None:
            max_bytes = int(volume_usage(self.data_dir).size_bytes * DEFAULT_VOLUME_SHARE)
        protected = {
            stream: min([writer.current_segment, *self.history_readers[stream].values()])
            for stream, writer in self.writers.items()
        }
        chosen = segments_to_delete(
            scan_volume(self.data_dir, list(self.writers)),
            protected,
            now=time.time(),
            max_age_seconds=self.config.segment_retention_max_age_seconds,
            max_total_bytes=max_bytes,
        )
        return delete_segments(self.data_dir, chosen)

    async def retain_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                freed = await asyncio.to_thread(self.retention_pass)
            except OSError as error:
                log.warning("segment retention failed", extra={"error": str(error)})
                continue
            if freed:
                self.retention_deleted_bytes.inc(freed)

    def close(self) -> None:
        self.gateway.close()
        for writer in self.writers.values():
            writer.close()

    # --- subscribers ---

    def app(self) -> web.Application:
        app = web.Application()

        async def on_shutdown(app: web.Application) -> None:
            self.hub.shut_down()

        app.on_shutdown.append(on_shutdown)
        app.router.add_get("/v1/streams/{stream}/subscribe", self.subscribe)
        add_probe_routes(
            app,
            liveness=self.liveness,
            readiness=self.readiness,
            render_metrics=self.render_metrics,
        )
        return app

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        stream = self.config.stream(request.match_info["stream"])
        if stream is None or not self.config.subscribers_enabled:
            name = request.match_info["stream"]
            return web.json_response({"error": f"unknown stream {name!r}"}, status=404)
        if not self.tokens.authorized(request):
            return self.tokens.refusal()
        scope = request.query.get("scope", "stream")
        if scope not in ("stream", "local"):
            return web.json_response(
                {"error": f"scope={scope!r}: expected stream (default) or local"}, status=400
            )
        start_text = request.query.get("from", "$")
        try:
            start = (
                None
                if start_text in ("", "$")
                else parse_position_vector(start_text, stream.partitions)
            )
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        if scope == "local":
            return await self.subscribe_local(request, stream, start)
        return await self.gateway.subscribe(request, stream, start)

    async def subscribe_local(
        self, request: web.Request, stream: StreamConfig, start: PositionVector | None
    ) -> web.StreamResponse:
        """This replica's records only, in file order (ID order per partition): what the
        gateway merges. First frame: `historyEnd`, the last ID per partition in the files;
        a `{"mark":N}` frame from the client is echoed after everything queued before it."""
        writer = self.writers[stream.name]
        directory = writer.directory
        first_segment = (
            None
            if start is None
            else await asyncio.to_thread(resume_segment, directory, start, stream.partitions)
        )
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        # Register before snapshotting the durable end: every record is either in the files
        # up to `history_end` or published to the queue afterwards, never both, never neither.
        subscriber = self.hub.register(stream.name, self.config.subscriber_max_buffered_entries)
        history_end = writer.durable_position
        history_last = dict(writer.durable_last)
        after = (
            dict(history_last)
            if start is None
            else {p: start.get(p, BEGINNING) for p in range(stream.partitions)}
        )
        begin = (  # in the segment being written, from its last checkpoint before `after`
            writer.live_start(after, stream.partitions)
            if first_segment == writer.current_segment
            else FilePosition(first_segment or 0, 0)
        )

        async def watch_client() -> None:  # marks, or the close
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    data = (
                        message.data if isinstance(message.data, bytes) else message.data.encode()
                    )
                    if data.startswith(MARK_PREFIX):
                        self.hub.mark(subscriber, data)
            subscriber.gone = True
            subscriber.wakeup.set()

        async def send(line: bytes) -> None:
            position = record_position(line)
            if position is not None:
                partition, entry_id = position
                if entry_id <= after.get(partition, BEGINNING):
                    return  # at or before the requested position
                after[partition] = entry_id
            await ws.send_frame(line, WSMsgType.TEXT)  # already UTF-8 JSON

        watcher = asyncio.create_task(watch_client())
        readers = self.history_readers[stream.name]
        try:
            await ws.send_frame(history_end_frame(history_last), WSMsgType.TEXT)
            if first_segment is not None and any(
                last > after.get(p, BEGINNING) for p, last in history_last.items()
            ):
                reader = SegmentRangeReader(directory, begin, history_end)
                readers[id(subscriber)] = first_segment
                # a bounded chunk at a time, read off the event loop
                while (lines := await asyncio.to_thread(reader.read)) is not None:
                    readers[id(subscriber)] = reader.segment
                    for line in lines:
                        await send(line)
                readers.pop(id(subscriber), None)
            while not ws.closed:
                await subscriber.wakeup.wait()
                subscriber.wakeup.clear()
                if subscriber.gone:
                    await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                    break
                if subscriber.overflowed:
                    self.slow_disconnects.labels(stream=stream.name).inc()
                    await ws.close(
                        code=CLOSE_SLOW_SUBSCRIBER,
                        message=close_reason("subscriber too slow", after),
                    )
                    break
                while subscriber.queue:
                    await send(subscriber.queue.popleft())
        except ConnectionError:
            pass
        finally:
            readers.pop(id(subscriber), None)
            self.hub.unregister(stream.name, subscriber)
            watcher.cancel()
        return ws

    def render_metrics(self) -> bytes:
        self.volume.update()
        for stream, subscribers in self.hub.subscribers.items():
            self.subscribers.labels(stream=stream).set(len(subscribers))
        return self.metrics.render()


async def serve_output(
    config: RuntimeConfig,
    address: RedisAddress,
    *,
    consumer: str,
    data_dir: Path,
    host: str,
    port: int,
    stop: asyncio.Event,
    peers: dict[str, str] | None = None,
    peer_url: str | None = None,
    config_path: Path | None = None,
    tokens: list[str] | None = None,
    retention_interval: float = RETENTION_INTERVAL_SECONDS,
) -> None:
    """The subscribe gateway merges `peers` (consumer -> base URL, this one included), else
    the StatefulSet ordinals of the spec at `config_path` reached by `peer_url` (`{pod}`),
    else only this process."""
    directory = PeerDirectory(
        own_name=consumer,
        own_url=f"http://{_loopback_if_any(host)}:{port}",
        explicit=peers,
        url_template=peer_url,
        config_path=config_path,
    )
    process = OutputProcess(config, address, consumer, data_dir, peers=directory, tokens=tokens)
    process.recover_files()
    runner = web.AppRunner(process.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("output listening", extra={"host": host, "port": port, "dir": str(data_dir)})
    retention = asyncio.create_task(process.retain_forever(retention_interval))
    try:
        await run_until_stopped(
            lambda: process.run(stop),
            stop,
            "output",
            liveness=process.liveness,
            readiness=process.readiness,
        )
    finally:
        retention.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retention
        process.close()
        await runner.cleanup()
        process.tracing.shutdown()


def _loopback_if_any(host: str) -> str:
    """Where this process reaches its own port."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
