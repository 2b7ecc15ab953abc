"""`POST /v1/streams/{stream}/events`: a JSON or NDJSON body, answered 202 with a receipt once
Valkey accepted every event. With an `Idempotency-Key` header, the same request sent again is
answered with the first receipt and stored once (idempotency.py)."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from ..codec import BadInputError, parse_json_body, parse_ndjson
from ..resp import RespError
from .admission import Admission
from .backlog import BacklogMonitor
from .idempotency import REPLAYED_HEADER, BadIdempotencyKeyError, IdempotencyConflictError
from .writer import EntryWriter

log = logging.getLogger(__name__)

NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
JSON_TYPES = frozenset({"application/json"})


class RestHandler:
    def __init__(self, admission: Admission, writer: EntryWriter, monitor: BacklogMonitor) -> None:
        self.admission = admission
        self.config = admission.config
        self.metrics = admission.metrics
        self.writer = writer
        self.monitor = monitor

    async def post_events(self, request: web.Request) -> web.Response:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        error = self.admission.error
        max_bytes = self.config.max_request_bytes
        if request.content_length is not None and request.content_length > max_bytes:
            return error(413, f"body exceeds maxRequestBytes ({max_bytes})", stream.name)
        if self.monitor.over_watermark(stream.name):
            return error(
                429,
                "backlog above the watermark; retry later",
                stream.name,
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            )
        try:
            idempotency_key = self.admission.idempotency_key(request)
        except BadIdempotencyKeyError as bad:
            return error(400, str(bad), stream.name)
        content_type = request.content_type
        if content_type not in NDJSON_TYPES and content_type not in JSON_TYPES:
            return error(
                415, "Content-Type must be application/json or application/x-ndjson", stream.name
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body exceeds maxRequestBytes ({max_bytes})", stream.name)
        try:
            if content_type in NDJSON_TYPES:
                batch = parse_ndjson(body, key_field=stream.partition_key)
            else:
                batch = parse_json_body(body, key_field=stream.partition_key)
        except BadInputError as bad:
            return error(400, str(bad), stream.name)
        try:
            receipt = await self.admission.submit(self.writer, stream, batch, idempotency_key)
        except IdempotencyConflictError as conflict:
            return error(422, str(conflict), stream.name)
        except (OSError, RespError) as failure:
            log.error("write to Valkey failed", extra={"error": str(failure)})
            return self.admission.unavailable(stream.name)
        if not receipt.replayed:  # counted when first acknowledged
            self.metrics.events.labels(stream=stream.name).inc(receipt.count)
        self.metrics.reply(202, stream.name)
        return web.Response(
            status=202,
            body=orjson.dumps(receipt.as_json()),
            content_type="application/json",
            headers={REPLAYED_HEADER: "true"} if receipt.replayed else None,
        )
