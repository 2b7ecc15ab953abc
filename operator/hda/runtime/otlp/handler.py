"""`POST /v1/logs`, `/v1/metrics`, `/v1/traces`: OTLP/HTTP answered as the specification says.

- 200 with the Export*ServiceResponse (in the request's encoding) once Valkey accepted every
  event; items refused by the mapping are counted in `partial_success`, the rest written;
- 400 with a google.rpc.Status for a body that does not decode, and nothing written;
- 429 (backlog over the watermark) and 503 (Valkey unreachable) with Retry-After, which OTLP
  exporters honour, before the body is read;
- a 503 can also follow a write Valkey took (a failover in its middle): a request sent with an
  `Idempotency-Key` header is stored once however often it is sent again, answered 200 with
  `Idempotent-Replayed: true` (400 for a malformed key, 422 for a key reused with another body);
- 401, 404 (a signal the spec maps to no stream), 413 and 415 with a Status too.
The bearer token, the watermark and the writer are the ones of the JSON ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.rpc.code_pb2 import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAUTHENTICATED,
    UNAVAILABLE,
)
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..auth import REFUSAL_HEADERS
from ..codec import ParsedBatch, lookup
from ..ingest.admission import UNAVAILABLE_RETRY_AFTER, Admission
from ..ingest.backlog import BacklogMonitor
from ..ingest.idempotency import REPLAYED_HEADER, BadIdempotencyKeyError, IdempotencyConflictError
from ..ingest.writer import EntryWriter
from ..resp import RespError
from .decode import (
    REQUEST_TYPES,
    Encoding,
    ExportResponse,
    MalformedRequestError,
    decode_request,
    encode_message,
    encoding_of,
)
from .mapping import Mapped, map_request

log = logging.getLogger(__name__)

_RPC_CODES = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    404: NOT_FOUND,
    413: RESOURCE_EXHAUSTED,
    415: INVALID_ARGUMENT,
    422: INVALID_ARGUMENT,
    429: RESOURCE_EXHAUSTED,
    503: UNAVAILABLE,
}


class OtlpHandler:
    def __init__(self, admission: Admission, writer: EntryWriter, monitor: BacklogMonitor) -> None:
        self.admission = admission
        self.config = admission.config
        self.metrics = admission.metrics
        self.writer = writer
        self.monitor = monitor
        self.items = self.metrics.registry.counter(
            "hda_ingest_otlp_items_total",
            "OTLP log records, metric data points and spans by signal and outcome",
            ["signal", "outcome"],
        )

    def add_routes(self, app: web.Application) -> None:
        for signal in REQUEST_TYPES:
            app.router.add_post(f"/v1/{signal}", self._route(signal))

    def _route(self, signal: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.export(signal, request)

        return handle

    async def export(self, signal: str, request: web.Request) -> web.StreamResponse:
        encoding = encoding_of(request.content_type)
        reply_encoding = encoding or Encoding.JSON
        stream_name = self.config.otlp_streams.get(signal, "")

        def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
            self.metrics.reply(status, stream_name)
            body = Status(code=_RPC_CODES[status], message=message)
            return web.Response(
                status=status,
                body=encode_message(body, reply_encoding),
                content_type=reply_encoding.value,
                headers=headers,
            )

        if not self.admission.authorized(request):
            return error(401, self.admission.tokens.refusal_message(), REFUSAL_HEADERS)
        stream = self.config.stream(stream_name) if stream_name else None
        if stream is None:
            return error(404, f"no stream receives OTLP {signal}: set spec.ingest.otlp.{signal}")
        if encoding is None:
            return error(415, "Content-Type must be application/x-protobuf or application/json")
        if not self.admission.buffer_reachable():
            return error(503, "Valkey unavailable; retry", {"Retry-After": UNAVAILABLE_RETRY_AFTER})
        max_bytes = self.config.max_request_bytes
        if request.content_length is not None and request.content_length > max_bytes:
            return error(413, f"body exceeds maxRequestBytes ({max_bytes})")
        if self.monitor.over_watermark(stream.name):
            return error(
                429,
                "backlog above the watermark; retry later",
                {"Retry-After": str(self.config.retry_after_seconds)},
            )
        try:
            idempotency_key = self.admission.idempotency_key(request)
        except BadIdempotencyKeyError as bad:
            return error(400, str(bad))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body (decompressed) exceeds maxRequestBytes ({max_bytes})")
        except RequestPayloadError as failure:  # e.g. a body that is not the gzip it claims
            return error(400, f"unreadable body: {failure}")
        try:
            mapped = map_request(decode_request(signal, body, encoding))
        except MalformedRequestError as bad:
            return error(400, str(bad))
        replayed = False
        if mapped.events:
            lines = [orjson.dumps(event) for event in mapped.events]
            key_field = stream.partition_key
            keys = [lookup(event, key_field) for event in mapped.events] if key_field else []
            batch = ParsedBatch(lines=lines, objects=mapped.events, keys=keys)
            try:
                receipt = await self.admission.submit(self.writer, stream, batch, idempotency_key)
            except IdempotencyConflictError as conflict:
                return error(422, str(conflict))
            except (OSError, RespError) as failure:
                log.error("write to Valkey failed", extra={"error": str(failure)})
                return error(
                    503, "Valkey unavailable; retry", {"Retry-After": UNAVAILABLE_RETRY_AFTER}
                )
            replayed = receipt.replayed
        self.metrics.reply(200, stream.name)
        if not replayed:  # counted when first accepted
            self._count(signal, stream.name, mapped)
        return web.Response(
            status=200,
            body=encode_message(self._response(signal, mapped), encoding),
            content_type=encoding.value,
            headers={REPLAYED_HEADER: "true"} if replayed else None,
        )

    def _count(self, signal: str, stream: str, mapped: Mapped) -> None:
        self.metrics.events.labels(stream=stream).inc(len(mapped.events))
        self.items.labels(signal=signal, outcome="accepted").inc(len(mapped.events))
        if mapped.rejected:
            self.items.labels(signal=signal, outcome="rejected").inc(mapped.rejected)

    @staticmethod
    def _response(signal: str, mapped: Mapped) -> ExportResponse:
        """The success reply; `partial_success` only when items were refused."""
        if signal == "logs":
            logs = ExportLogsServiceResponse()
            if mapped.rejected:
                logs.partial_success.rejected_log_records = mapped.rejected
                logs.partial_success.error_message = mapped.error
            return logs
        if signal == "metrics":
            metrics = ExportMetricsServiceResponse()
            if mapped.rejected:
                metrics.partial_success.rejected_data_points = mapped.rejected
                metrics.partial_success.error_message = mapped.error
            return metrics
        traces = ExportTraceServiceResponse()
        if mapped.rejected:
            traces.partial_success.rejected_spans = mapped.rejected
            traces.partial_success.error_message = mapped.error
        return traces
