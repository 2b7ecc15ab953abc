"""`hda ingest`: REST and WebSocket ingest into partitioned Valkey streams.

Requests are validated whole before anything is written, then handed to `EntryWriter`, which
coalesces the events of every request that arrives in the same event-loop turn into one XADD per
partition (many events per entry) and pipelines them on one connection. A request is answered
only after Valkey accepted its entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from .codec import (
    BadInputError,
    ParsedBatch,
    event_id,
    input_key,
    parse_json_body,
    parse_ndjson,
    split_by_partition,
)
from .config import WORKER_GROUP, RuntimeConfig, StreamConfig
from .groups import ensure_groups
from .metrics import Metrics
from .resp import Arg, Reconnecting, RedisAddress, RespConnection, RespError

log = logging.getLogger(__name__)

NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
JSON_TYPES = frozenset({"application/json"})
MAX_ENTRY_BYTES = 4 * 1024 * 1024
WS_MAX_FRAMES_IN_FLIGHT = 64


@dataclass(frozen=True)
class Receipt:
    count: int
    first_id: str
    last_id: str

    def as_json(self) -> dict[str, object]:
        return {"count": self.count, "firstId": self.first_id, "lastId": self.last_id}


@dataclass
class Submission:
    stream: str
    groups: dict[int, list[bytes]]  # partition -> lines, in request order within the partition
    first: tuple[int, int]  # (partition, index within that partition's lines) of event 0
    last: tuple[int, int]
    count: int
    future: asyncio.Future[Receipt]


Slot = tuple[str, int]  # (stream, partition)
Spots = dict[tuple[int, int], tuple[int, int]]  # (partition, index) -> (entry number, offset)


def layout_entries(
    submissions: list[Submission], max_events: int, max_bytes: int
) -> tuple[dict[Slot, list[list[bytes]]], list[Spots]]:
    """Pack the submissions' lines into entries per (stream, partition), in submission order,
    each at most `max_events` lines and `max_bytes` (a single larger line gets its own entry).
    Also returns where each submission's first and last events landed."""
    entries: dict[Slot, list[list[bytes]]] = {}
    sizes: dict[Slot, int] = {}
    located: list[Spots] = []
    for submission in submissions:
        spots: Spots = {}
        for partition, lines in submission.groups.items():
            slot = (submission.stream, partition)
            chunks = entries.setdefault(slot, [[]])
            size = sizes.get(slot, 0)
            wanted = [i for p, i in (submission.first, submission.last) if p == partition]
            position, count = 0, len(lines)
            while position < count:
                current = chunks[-1]
                room = max_events - len(current)
                if room <= 0 or (current and size >= max_bytes):
                    current, size, room = [], 0, max_events
                    chunks.append(current)
                piece = lines[position : position + room]
                piece_bytes = sum(map(len, piece)) + len(piece)
                if size + piece_bytes > max_bytes:
                    fit, budget = 0, max_bytes - size
                    for line in piece:
                        if len(line) + 1 > budget and (fit or current):
                            break
                        budget -= len(line) + 1
                        fit += 1
                    if fit == 0:  # the next line does not fit here: start a new entry
                        current, size = [], 0
                        chunks.append(current)
                        continue
                    piece = piece[:fit]
                    piece_bytes = sum(map(len, piece)) + fit
                for index in wanted:
                    if position <= index < position + len(piece):
                        spots[(partition, index)] = (
                            len(chunks) - 1,
                            len(current) + index - position,
                        )
                current.extend(piece)
                size += piece_bytes
                position += len(piece)
            sizes[slot] = size
        located.append(spots)
    return entries, located


class EntryWriter:
    """Coalesces concurrent submissions into entries and pipelines their XADDs."""

    def __init__(self, connection: Reconnecting, max_events_per_entry: int) -> None:
        self.connection = connection
        self.max_events_per_entry = max_events_per_entry
        self._pending: list[Submission] = []
        self._scheduled = False
        self.entries_written = 0
        self.events_written = 0

    def submit(
        self, stream: str, batch: ParsedBatch, groups: dict[int, list[int]]
    ) -> asyncio.Future[Receipt]:
        loop = asyncio.get_running_loop()
        lines = batch.lines
        if len(groups) == 1:
            ((partition, _),) = groups.items()
            line_groups = {partition: lines}
            first = (partition, 0)
            last = (partition, len(lines) - 1)
        else:
            line_groups = {p: [lines[i] for i in indexes] for p, indexes in groups.items()}
            where = {i: (p, n) for p, indexes in groups.items() for n, i in enumerate(indexes)}
            first, last = where[0], where[len(lines) - 1]
        submission = Submission(stream, line_groups, first, last, len(lines), loop.create_future())
        self._pending.append(submission)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return submission.future

    def _flush(self) -> None:
        self._scheduled = False
        submissions, self._pending = self._pending, []
        entries, located = layout_entries(submissions, self.max_events_per_entry, MAX_ENTRY_BYTES)
        commands: list[tuple[Arg, ...]] = []
        first_command: dict[tuple[str, int], int] = {}
        for (stream, partition), chunks in entries.items():
            first_command[(stream, partition)] = len(commands)
            for chunk in chunks:
                commands.append(
                    (
                        "XADD",
                        input_key(stream, partition),
                        "*",
                        "n",
                        len(chunk),
                        "d",
                        b"\n".join(chunk),
                    )
                )
                self.events_written += len(chunk)
        self.entries_written += len(commands)
        task = asyncio.ensure_future(self._send(commands))
        task.add_done_callback(
            lambda done: self._resolve(done, submissions, located, first_command)
        )

    async def _send(self, commands: list[tuple[Arg, ...]]) -> list[object]:
        connection = await self.connection.get()
        return await connection.pipeline(commands)

    @staticmethod
    def _resolve(
        done: asyncio.Future[list[object]],
        submissions: list[Submission],
        located: list[dict[tuple[int, int], tuple[int, int]]],
        first_command: dict[tuple[str, int], int],
    ) -> None:
        error = done.exception()
        replies: list[object] = [] if error is not None else done.result()
        for submission, spots in zip(submissions, located, strict=True):
            if submission.future.done():
                continue
            if error is not None:
                submission.future.set_exception(error)
                continue
            ids: list[str] = []
            failed: object = None
            for partition, index in (submission.first, submission.last):
                chunk, offset = spots[(partition, index)]
                reply = replies[first_command[(submission.stream, partition)] + chunk]
                if isinstance(reply, RespError):
                    failed = reply
                    break
                assert isinstance(reply, bytes)
                ids.append(event_id(partition, reply.decode(), offset))
            if failed is not None:
                submission.future.set_exception(RespError(str(failed)))
            else:
                submission.future.set_result(Receipt(submission.count, ids[0], ids[1]))


class BacklogMonitor:
    """Polls the worker group's backlog (undelivered + pending) of every stream.

    Valkey counts entries; the event figure multiplies by this process's average events per
    entry, which is what maxBacklog (in events) is compared with.
    """

    def __init__(
        self, config: RuntimeConfig, connection: Reconnecting, writer: EntryWriter
    ) -> None:
        self.config = config
        self.connection = connection
        self.writer = writer
        self.backlog_events: dict[str, float] = {s.name: 0.0 for s in config.streams}
        self.open: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in config.streams}
        for event in self.open.values():
            event.set()
        self.healthy = False

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
                    connection, input_key(stream.name, partition)
                )
            backlog = entries * events_per_entry
            self.backlog_events[stream.name] = backlog
            if backlog > self.config.max_backlog_events:
                self.open[stream.name].clear()
            else:
                self.open[stream.name].set()

    @staticmethod
    async def _partition_backlog(connection: RespConnection, key: str) -> int:
        try:
            groups = await connection.execute("XINFO", "GROUPS", key)
        except RespError:
            return 0  # the key does not exist yet
        for flat in groups:
            info = dict(zip(flat[0::2], flat[1::2], strict=True))
            if info[b"name"] == WORKER_GROUP.encode():
                lag = info.get(b"lag")
                if lag is None:  # NULL after trims or explicit IDs: fall back to the length
                    lag = await connection.execute("XLEN", key)
                return int(lag) + int(info[b"pending"])
        return int(await connection.execute("XLEN", key))

    async def run(self, interval: float = 0.2) -> None:
        while True:
            try:
                await self.poll_once()
                self.healthy = True
            except (OSError, RespError) as error:
                self.healthy = False
                log.warning("backlog poll failed", extra={"error": str(error)})
            await asyncio.sleep(interval)


class IngestServer:
    def __init__(
        self,
        config: RuntimeConfig,
        address: RedisAddress,
        *,
        tokens: list[str] | None = None,
    ) -> None:
        self.config = config
        self.address = address
        self.tokens = [t.encode() for t in tokens or [] if t]
        self.metrics = Metrics()
        self.metrics.describe("hda_ingest_events_total", "counter", "Events accepted")
        self.metrics.describe("hda_ingest_requests_total", "counter", "Requests by status code")
        self.metrics.describe("hda_ingest_backlog_events", "gauge", "Estimated backlog in events")
        self.metrics.describe("hda_ingest_entries_total", "counter", "Stream entries written")
        self._round_robin = {s.name: itertools.count() for s in config.streams}
        self.writer: EntryWriter | None = None
        self.monitor: BacklogMonitor | None = None
        self._connections: list[Reconnecting] = []
        self.shutting_down = asyncio.Event()

    # --- lifecycle ---

    async def _context(self, app: web.Application) -> AsyncIterator[None]:
        write_connection = Reconnecting(self.address)
        poll_connection = Reconnecting(self.address)
        self._connections = [write_connection, poll_connection]
        self.writer = EntryWriter(write_connection, self.config.max_events_per_entry)
        self.monitor = BacklogMonitor(self.config, poll_connection, self.writer)
        await ensure_groups(await poll_connection.get(), self.config)
        monitor_task = asyncio.create_task(self.monitor.run())
        log.info("ingest ready", extra={"streams": [s.name for s in self.config.streams]})
        yield
        monitor_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor_task
        for connection in self._connections:
            connection.close()

    def app(self) -> web.Application:
        # aiohttp enforces client_max_size when reading a body: that is our 413.
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app.cleanup_ctx.append(self._context)

        async def on_shutdown(app: web.Application) -> None:
            self.shutting_down.set()

        app.on_shutdown.append(on_shutdown)
        app.router.add_post("/v1/streams/{stream}/events", self.post_events)
        app.router.add_get("/v1/streams/{stream}/ws", self.websocket)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_handler)
        return app

    # --- shared checks ---

    def _authorized(self, request: web.Request) -> bool:
        if not self.tokens:
            return True
        header = request.headers.get("Authorization", "")
        offered = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        offered_bytes = offered.encode()
        return any(hmac.compare_digest(offered_bytes, token) for token in self.tokens)

    def _error(
        self, status: int, message: str, stream: str = "", headers: dict[str, str] | None = None
    ) -> web.Response:
        self.metrics.inc("hda_ingest_requests_total", code=str(status), stream=stream)
        return web.json_response({"error": message}, status=status, headers=headers)

    def _precheck(self, request: web.Request) -> tuple[StreamConfig | None, web.Response | None]:
        name = request.match_info["stream"]
        if not self._authorized(request):
            return None, self._error(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        stream = self.config.stream(name)
        if stream is None:
            return None, self._error(404, f"unknown stream {name!r}")
        return stream, None

    def _partition_groups(self, stream: StreamConfig, batch: ParsedBatch) -> dict[int, list[int]]:
        round_robin = next(self._round_robin[stream.name]) % stream.partitions
        return split_by_partition(batch, stream.partitions, round_robin)

    # --- REST ---

    async def post_events(self, request: web.Request) -> web.Response:
        stream, problem = self._precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        assert self.monitor is not None
        assert self.writer is not None
        if (
            request.content_length is not None
            and request.content_length > self.config.max_request_bytes
        ):
            return self._error(
                413, f"body exceeds maxRequestBytes ({self.config.max_request_bytes})", stream.name
            )
        if self.monitor.over_watermark(stream.name):
            return self._error(
                429,
                "backlog above the watermark; retry later",
                stream.name,
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            )
        content_type = request.content_type
        if content_type not in NDJSON_TYPES and content_type not in JSON_TYPES:
            return self._error(
                415, "Content-Type must be application/json or application/x-ndjson", stream.name
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(
                413, f"body exceeds maxRequestBytes ({self.config.max_request_bytes})", stream.name
            )
        try:
            if content_type in NDJSON_TYPES:
                batch = parse_ndjson(body, key_field=stream.partition_key)
            else:
                batch = parse_json_body(body, key_field=stream.partition_key)
        except BadInputError as error:
            return self._error(400, str(error), stream.name)
        try:
            receipt = await self.writer.submit(
                stream.name, batch, self._partition_groups(stream, batch)
            )
        except (OSError, RespError) as error:
            log.error("write to Valkey failed", extra={"error": str(error)})
            return self._error(
                503, "Valkey unavailable; retry", stream.name, headers={"Retry-After": "1"}
            )
        self.metrics.inc("hda_ingest_events_total", receipt.count, stream=stream.name)
        self.metrics.inc("hda_ingest_requests_total", code="202", stream=stream.name)
        return web.Response(
            status=202, body=orjson.dumps(receipt.as_json()), content_type="application/json"
        )

    # --- WebSocket ---

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        stream, problem = self._precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        assert self.monitor is not None
        assert self.writer is not None
        ws = web.WebSocketResponse(max_msg_size=self.config.max_request_bytes, heartbeat=30)
        await ws.prepare(request)
        acks: asyncio.Queue[tuple[int, asyncio.Future[Receipt] | dict[str, object]] | None] = (
            asyncio.Queue(maxsize=WS_MAX_FRAMES_IN_FLIGHT)
        )
        sender = asyncio.create_task(self._send_acks(ws, acks, stream.name))
        gate = self.monitor.open[stream.name]
        try:
            for sequence in itertools.count(1):
                # Flow control: while over the watermark we stop reading, so TCP pushes back.
                await gate.wait()
                message = await self._receive_unless_shutting_down(ws)
                if message is None:
                    break  # shutting down: ack what was read, then close (below)
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if message.type == WSMsgType.ERROR:
                    break
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                data = message.data.encode() if message.type == WSMsgType.TEXT else message.data
                try:
                    batch = parse_frame(data, key_field=stream.partition_key)
                except BadInputError as error:
                    await acks.put(
                        (sequence, {"seq": sequence, "status": 400, "error": str(error)})
                    )
                    continue
                future = self.writer.submit(
                    stream.name, batch, self._partition_groups(stream, batch)
                )
                await acks.put((sequence, future))
        finally:
            await acks.put(None)
            await sender
            if not ws.closed:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"ingest shutting down")
        return ws

    async def _receive_unless_shutting_down(self, ws: web.WebSocketResponse) -> WSMessage | None:
        """The next frame, or None once shutdown began (every frame read is still acked)."""
        receive = asyncio.ensure_future(ws.receive())
        stopping = asyncio.ensure_future(self.shutting_down.wait())
        done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if receive in done:
            stopping.cancel()
            return receive.result()
        receive.cancel()
        return None

    async def _send_acks(
        self,
        ws: web.WebSocketResponse,
        acks: asyncio.Queue[tuple[int, asyncio.Future[Receipt] | dict[str, object]] | None],
        stream: str,
    ) -> None:
        while (item := await acks.get()) is not None:
            sequence, pending = item
            if isinstance(pending, dict):
                reply = pending
            else:
                try:
                    receipt = await pending
                    reply = {"seq": sequence, **receipt.as_json()}
                    self.metrics.inc("hda_ingest_events_total", receipt.count, stream=stream)
                except (OSError, RespError) as error:
                    reply = {
                        "seq": sequence,
                        "status": 503,
                        "error": f"Valkey unavailable: {error}",
                    }
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(orjson.dumps(reply))

    # --- probes and metrics ---

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.monitor is not None and self.monitor.healthy
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        if self.monitor is not None and self.writer is not None:
            for name, backlog in self.monitor.backlog_events.items():
                self.metrics.set("hda_ingest_backlog_events", backlog, stream=name)
            self.metrics.set("hda_ingest_entries_total", self.writer.entries_written)
        return web.Response(text=self.metrics.render(), content_type="text/plain")


def parse_frame(data: bytes, *, key_field: str | None) -> ParsedBatch:
    """A WebSocket frame: one event or an NDJSON batch; a pretty-printed object or a JSON
    array of objects also works."""
    try:
        return parse_ndjson(data, key_field=key_field)
    except BadInputError as ndjson_error:
        stripped = data.strip()
        if stripped.startswith(b"[") or (stripped.startswith(b"{") and b"\n" in stripped):
            try:
                return parse_json_body(stripped, key_field=key_field)
            except BadInputError:
                pass
        raise ndjson_error from None


async def serve_ingest(
    config: RuntimeConfig,
    address: RedisAddress,
    *,
    host: str,
    port: int,
    tokens: list[str] | None,
    stop: asyncio.Event,
    reuse_port: bool = False,
) -> None:
    server = IngestServer(config, address, tokens=tokens)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    log.info("ingest listening", extra={"host": host, "port": port, "at": time.time()})
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
