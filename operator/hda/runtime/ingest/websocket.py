"""`GET /v1/streams/{stream}/ws`: frames of events in, one acknowledgement per frame out, in
order; over the watermark we stop reading so TCP pushes back.

Frames are numbered from 1, or from `?seq=N`. A connection opened with an Idempotency-Key (header,
or `?idempotencyKey=` for browsers) makes each frame's key `KEY/SEQ`: a producer that lost its
connection opens a new one with the same key and `?seq=` of its first unacknowledged frame, and
sends again from there; frames stored before are acknowledged again, not stored twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import orjson
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from ..codec import BadInputError, ParsedBatch, parse_json_body, parse_ndjson
from ..resp import RespError
from .admission import Admission
from .backlog import BacklogMonitor
from .idempotency import BadIdempotencyKeyError, IdempotencyConflictError
from .writer import EntryWriter, Receipt

WS_MAX_FRAMES_IN_FLIGHT = 64

Ack = tuple[int, asyncio.Future[Receipt] | dict[str, object]]


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


def first_frame_number(value: str | None) -> int:
    """`?seq=`: the number of the connection's first frame (1 when absent)."""
    if value is None:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"query parameter seq must be a whole number >= 1, got {value!r}")
    return int(value)


class WebSocketHandler:
    def __init__(
        self,
        admission: Admission,
        writer: EntryWriter,
        monitor: BacklogMonitor,
        shutting_down: asyncio.Event,
    ) -> None:
        self.admission = admission
        self.config = admission.config
        self.metrics = admission.metrics
        self.writer = writer
        self.monitor = monitor
        self.shutting_down = shutting_down

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        try:
            idempotency_key = self.admission.idempotency_key(request, in_query=True)
            first_sequence = first_frame_number(request.query.get("seq"))
        except (BadIdempotencyKeyError, ValueError) as bad:
            return self.admission.error(400, str(bad), stream.name)
        ws = web.WebSocketResponse(max_msg_size=self.config.max_request_bytes, heartbeat=30)
        await ws.prepare(request)
        acks: asyncio.Queue[Ack | None] = asyncio.Queue(maxsize=WS_MAX_FRAMES_IN_FLIGHT)
        sender = asyncio.create_task(self._send_acks(ws, acks, stream.name))
        gate = self.monitor.open[stream.name]
        try:
            for sequence in itertools.count(first_sequence):
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
                frame_key = None if idempotency_key is None else f"{idempotency_key}/{sequence}"
                future = self.admission.submit(self.writer, stream, batch, frame_key)
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
        self, ws: web.WebSocketResponse, acks: asyncio.Queue[Ack | None], stream: str
    ) -> None:
        while (item := await acks.get()) is not None:
            sequence, pending = item
            if isinstance(pending, dict):
                reply = pending
            else:
                try:
                    receipt = await pending
                    reply = {"seq": sequence, **receipt.as_json()}
                    if not receipt.replayed:  # counted when first acknowledged
                        self.metrics.events.labels(stream=stream).inc(receipt.count)
                except IdempotencyConflictError as conflict:
                    reply = {"seq": sequence, "status": 422, "error": str(conflict)}
                except (OSError, RespError) as error:
                    reply = {
                        "seq": sequence,
                        "status": 503,
                        "error": f"Valkey unavailable: {error}",
                    }
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(orjson.dumps(reply))
