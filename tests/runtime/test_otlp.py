"""OTLP/HTTP ingest as a real process, fed by the OpenTelemetry Python SDK's own OTLP/HTTP
exporters (protobuf, and the SDK's JSON exporter), through real workers and output."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.common.http import Compression as JsonCompression
from opentelemetry.exporter.otlp.json.http import OTLPMetricExporter as JsonMetricExporter
from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from tests.runtime.conftest import Processes, read_output_events, total_length, wait_for

from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

TOKEN = "otlp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMS = (
    "    - {name: logs, partitions: 2}\n"
    "    - {name: metrics, partitions: 1}\n"
    "    - {name: spans, partitions: 2, partitionKey: traceId}\n"
    "    - {name: plain, partitions: 1}\n"
)
OTLP = "  ingest:\n    otlp: {logs: logs, metrics: metrics, traces: spans}\n"
LOG_TIME = 1_700_000_000_123_456_789  # beyond 2**53: must arrive exact, as an integer
RESOURCE = Resource.create({"service.name": "checkout", "deployment.environment": "test"})


@dataclass
class Pipeline:
    port: int
    data: Path

    def endpoint(self, signal: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/{signal}"

    def events(self, stream: str) -> list[dict[str, Any]]:
        return read_output_events(self.data / stream)[0]


@pytest.fixture
def pipeline(processes: Processes, write_manifest: Any, tmp_path: Path) -> Pipeline:
    manifest = write_manifest(STREAMS, OTLP)
    port = processes.ingest(manifest, env={"HDA_INGEST_TOKEN": TOKEN})
    processes.worker(manifest)
    processes.output(manifest, tmp_path / "data")
    return Pipeline(port, tmp_path / "data")


def emit_logs(exporter: LogRecordExporter, count: int) -> None:
    """`count` log records, the first inside a span so it carries trace context."""
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=512))
    logger = provider.get_logger("shop.orders", "1.2.3")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("checkout") as span:
        logger.emit(
            timestamp=LOG_TIME,
            body="order placed",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"order.id": 0, "items": ["a", "b"]},
            context=trace.set_span_in_context(span),
        )
    for sequence in range(1, count):
        logger.emit(body={"seq": sequence}, attributes={"order.id": sequence})
    provider.shutdown()


def emit_metrics(exporter: MetricExporter) -> None:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("shop.metrics", "0.1")
    meter.create_counter("orders", unit="1").add(3, {"region": "eu"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/buy"})
    provider.shutdown()  # collects and exports once


def emit_spans(exporter: SpanExporter) -> tuple[str, str, str]:
    """A parent and a child span; their trace ID and span IDs as hex."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.http", "2.0")
    with (
        tracer.start_as_current_span("GET /buy", kind=trace.SpanKind.SERVER) as parent,
        tracer.start_as_current_span("db", attributes={"db.rows": 4}) as child,
    ):
        child.add_event("query", {"sql": "select 1"})
    provider.shutdown()
    context, child_context = parent.get_span_context(), child.get_span_context()
    return (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
        f"{child_context.span_id:016x}",
    )


async def check_logs_metrics_spans(pipeline: Pipeline, exporters: dict[str, Any]) -> None:
    await asyncio.to_thread(emit_logs, exporters["logs"], 5)
    await asyncio.to_thread(emit_metrics, exporters["metrics"])
    trace_id, parent_id, child_id = await asyncio.to_thread(emit_spans, exporters["traces"])

    await wait_for(lambda: len(pipeline.events("logs")) == 5)
    logs = sorted(pipeline.events("logs"), key=lambda e: e["attributes"]["order.id"])
    first = logs[0]
    assert first["resource"]["service.name"] == "checkout"
    assert first["scope"] == {"name": "shop.orders", "version": "1.2.3"}
    assert first["body"] == "order placed"
    assert first["severityNumber"] == SeverityNumber.WARN.value
    assert first["attributes"] == {"order.id": 0, "items": ["a", "b"]}
    assert len(first["traceId"]) == 32
    assert len(first["spanId"]) == 16
    assert first["timeUnixNano"] == LOG_TIME
    assert isinstance(first["observedTimeUnixNano"], int)
    assert [e["body"] for e in logs[1:]] == [{"seq": n} for n in range(1, 5)]

    await wait_for(lambda: len(pipeline.events("metrics")) == 2)
    points = {e["metric"]["name"]: e for e in pipeline.events("metrics")}
    assert points["orders"]["metric"]["type"] == "sum"
    assert points["orders"]["metric"]["isMonotonic"] is True
    assert points["orders"]["value"] == 3
    assert points["orders"]["attributes"] == {"region": "eu"}
    assert points["latency"]["metric"]["type"] == "histogram"
    assert points["latency"]["count"] == 1
    assert points["latency"]["sum"] == 12.5
    assert points["latency"]["resource"]["service.name"] == "checkout"

    await wait_for(lambda: len(pipeline.events("spans")) == 2)
    spans = {e["name"]: e for e in pipeline.events("spans")}
    assert spans["GET /buy"]["traceId"] == trace_id
    assert spans["GET /buy"]["spanId"] == parent_id
    assert spans["GET /buy"]["kind"] == 2  # SPAN_KIND_SERVER as its integer
    assert "parentSpanId" not in spans["GET /buy"]
    assert spans["db"]["parentSpanId"] == parent_id
    assert spans["db"]["spanId"] == child_id
    assert spans["db"]["attributes"] == {"db.rows": 4}
    assert spans["db"]["events"][0]["name"] == "query"
    assert spans["db"]["endTimeUnixNano"] >= spans["db"]["startTimeUnixNano"]


async def test_sdk_protobuf_exporters_deliver_logs_metrics_and_spans(pipeline: Pipeline) -> None:
    exporters = {
        "logs": OTLPLogExporter(endpoint=pipeline.endpoint("logs"), headers=AUTH),
        "metrics": OTLPMetricExporter(endpoint=pipeline.endpoint("metrics"), headers=AUTH),
        "traces": OTLPSpanExporter(
            endpoint=pipeline.endpoint("traces"), headers=AUTH, compression=Compression.Gzip
        ),
    }
    await check_logs_metrics_spans(pipeline, exporters)


async def test_sdk_json_exporters_deliver_logs_metrics_and_spans(pipeline: Pipeline) -> None:
    exporters = {
        "logs": JsonLogExporter(
            endpoint=pipeline.endpoint("logs"), headers=AUTH, compression=JsonCompression.GZIP
        ),
        "metrics": JsonMetricExporter(endpoint=pipeline.endpoint("metrics"), headers=AUTH),
        "traces": JsonSpanExporter(endpoint=pipeline.endpoint("traces"), headers=AUTH),
    }
    await check_logs_metrics_spans(pipeline, exporters)


# --- error semantics, with a raw HTTP client ---------------------------------------------------


@pytest.fixture
def ingest_port(processes: Processes, write_manifest: Any) -> int:
    manifest = write_manifest(STREAMS, "  ingest:\n    otlp: {traces: spans}\n")
    return processes.ingest(manifest, env={"HDA_INGEST_TOKEN": TOKEN})


def span_request(*trace_ids: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for number, trace_id in enumerate(trace_ids):
        span = scope_spans.spans.add()
        span.name = f"s{number}"
        span.trace_id = trace_id
        span.span_id = bytes([number + 1] * 8)
    return request


async def post(
    port: int, signal: str, body: bytes, content_type: str, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/{signal}",
            data=body,
            headers={"Content-Type": content_type, **AUTH, **headers},
        ) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


@pytest.mark.parametrize(
    ("body", "content_type", "where"),
    [
        (b"\x0a\xff\xff\xff", "application/x-protobuf", "invalid protobuf"),
        (b'{"resourceSpans": [', "application/json", "invalid JSON"),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708"}]}]}]}',
            "application/json",
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (b'{"resourceSpans": {"oops": 1}}', "application/json", "invalid OTLP/JSON"),
    ],
)
async def test_malformed_body_is_400_with_a_status_and_nothing_written(
    ingest_port: int, redis: RespConnection, body: bytes, content_type: str, where: str
) -> None:
    status, reply, headers = await post(ingest_port, "traces", body, content_type)
    assert status == 400
    assert headers["Content-Type"].startswith(content_type)
    if content_type == "application/json":
        message = orjson.loads(reply)["message"]
        assert orjson.loads(reply)["code"] == 3  # INVALID_ARGUMENT
    else:
        message = Status.FromString(reply).message
    assert where in message
    assert await total_length(redis, "spans", 2) == 0


async def test_gzip_body_that_is_not_gzip_is_400(ingest_port: int, redis: RespConnection) -> None:
    body = span_request(bytes(range(16))).SerializeToString()
    status, _, _ = await post(
        ingest_port, "traces", body, "application/x-protobuf", **{"Content-Encoding": "gzip"}
    )
    assert status == 400
    status, _, _ = await post(
        ingest_port,
        "traces",
        gzip.compress(body),
        "application/x-protobuf",
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200
    assert await total_length(redis, "spans", 2) == 1


async def test_an_export_sent_again_with_its_idempotency_key_is_stored_once(
    ingest_port: int, redis: RespConnection
) -> None:
    body = span_request(bytes(range(16)), bytes(range(16, 32))).SerializeToString()
    key = {"Idempotency-Key": "export-0001"}
    first = await post(ingest_port, "traces", body, "application/x-protobuf", **key)
    again = await post(ingest_port, "traces", body, "application/x-protobuf", **key)
    assert first[0] == again[0] == 200
    assert again[2].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2]
    assert await total_length(redis, "spans", 2) == 2


async def test_an_idempotency_key_reused_for_another_export_is_422_and_nothing_written(
    ingest_port: int, redis: RespConnection
) -> None:
    key = {"Idempotency-Key": "export-0002"}
    one = span_request(bytes(range(16))).SerializeToString()
    other = span_request(bytes(range(16, 32))).SerializeToString()
    assert (await post(ingest_port, "traces", one, "application/x-protobuf", **key))[0] == 200
    status, reply, _ = await post(ingest_port, "traces", other, "application/x-protobuf", **key)
    assert status == 422
    refusal = Status.FromString(reply)
    assert refusal.code == 3  # INVALID_ARGUMENT: not to be retried as it is
    assert "Idempotency-Key 'export-0002' was used for a different body" in refusal.message
    assert await total_length(redis, "spans", 2) == 1


async def test_a_malformed_idempotency_key_on_an_export_is_400_naming_the_header(
    ingest_port: int, redis: RespConnection
) -> None:
    body = span_request(bytes(range(16))).SerializeToString()
    status, reply, _ = await post(
        ingest_port, "traces", body, "application/x-protobuf", **{"Idempotency-Key": "x" * 201}
    )
    assert status == 400
    assert "Idempotency-Key" in Status.FromString(reply).message
    assert await total_length(redis, "spans", 2) == 0


async def test_refused_spans_are_counted_in_partial_success_and_the_rest_written(
    ingest_port: int, redis: RespConnection
) -> None:
    body = span_request(bytes(range(16)), b"\x01\x02", bytes(range(16, 32))).SerializeToString()
    status, reply, _ = await post(ingest_port, "traces", body, "application/x-protobuf")
    assert status == 200
    partial = ExportTraceServiceResponse.FromString(reply).partial_success
    assert partial.rejected_spans == 1
    assert "'s1': traceId has 2 bytes" in partial.error_message
    assert await total_length(redis, "spans", 2) == 2


async def test_json_reply_has_camel_case_partial_success(ingest_port: int) -> None:
    body = orjson.dumps(
        {
            "resourceSpans": [
                {"scopeSpans": [{"spans": [{"traceId": "", "spanId": "0102030405060708"}]}]}
            ]
        }
    )
    status, reply, _ = await post(ingest_port, "traces", body, "application/json")
    assert status == 200
    assert orjson.loads(reply)["partialSuccess"]["rejectedSpans"] == "1"  # int64 as a string


async def test_signal_without_a_stream_is_404(ingest_port: int) -> None:
    status, reply, _ = await post(ingest_port, "logs", b"{}", "application/json")
    assert status == 404
    assert "spec.ingest.otlp.logs" in orjson.loads(reply)["message"]


async def test_wrong_token_is_401_and_unknown_content_type_415(ingest_port: int) -> None:
    status, _, headers = await post(
        ingest_port, "traces", b"{}", "application/json", Authorization="Bearer nope"
    )
    assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")
    status, _, _ = await post(ingest_port, "traces", b"{}", "text/plain")
    assert status == 415


async def test_empty_request_is_200_and_writes_nothing(
    ingest_port: int, redis: RespConnection
) -> None:
    status, reply, _ = await post(ingest_port, "traces", b"", "application/x-protobuf")
    assert status == 200
    assert not ExportTraceServiceResponse.FromString(reply).HasField("partial_success")
    assert await total_length(redis, "spans", 2) == 0


# --- backpressure ---------------------------------------------------------------------------


async def test_sdk_retries_after_429_deliver_each_log_record_exactly_once(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: logs, partitions: 1}\n",
        "  ingest:\n    otlp: {logs: logs}\n    backpressure: {maxBacklog: 10, retryAfterSeconds: 3}\n",
    )
    port = processes.ingest(manifest)
    processes.output(manifest, tmp_path / "data")
    # No worker yet: fill the stream above the watermark so the next export is refused.
    status, _, _ = await post(
        port,
        "logs",
        orjson.dumps(
            {
                "resourceLogs": [
                    {"scopeLogs": [{"logRecords": [{"body": {"stringValue": "filler"}}] * 20}]}
                ]
            }
        ),
        "application/json",
    )
    assert status == 200

    async def throttled() -> bool:
        status, _, headers = await post(port, "logs", b"", "application/x-protobuf")
        return status == 429 and headers["Retry-After"] == "3"

    await wait_for(throttled)
    refused = await metric_value(port, 'hda_ingest_requests_total{code="429",stream="logs"}')
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=60)
    exporting = asyncio.create_task(asyncio.to_thread(emit_logs, exporter, 50))

    async def exporter_refused() -> bool:
        series = 'hda_ingest_requests_total{code="429",stream="logs"}'
        return await metric_value(port, series) > refused

    await wait_for(exporter_refused)
    assert not exporting.done()  # waiting Retry-After before its next attempt
    processes.worker(manifest)  # drains the backlog: the retry is accepted
    await exporting
    await wait_for(lambda: len(read_output_events(tmp_path / "data" / "logs")[0]) == 70)
    events, _ = read_output_events(tmp_path / "data" / "logs")
    sequences = sorted(e["attributes"]["order.id"] for e in events if "attributes" in e)
    assert sequences == list(range(50))  # every record once: none lost, none twice


async def metric_value(port: int, series: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_body_over_max_request_bytes_is_413_compressed_or_not(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest(
        "    - {name: spans, partitions: 1}\n",
        "  ingest:\n    maxRequestBytes: 2048\n    otlp: {traces: spans}\n",
    )
    port = processes.ingest(manifest)
    big = span_request(*[bytes(range(16))] * 100).SerializeToString()
    assert len(big) > 2048
    status, reply, _ = await post(port, "traces", big, "application/x-protobuf")
    assert status == 413
    assert "maxRequestBytes (2048)" in Status.FromString(reply).message
    squeezed = gzip.compress(big)
    assert len(squeezed) < 2048  # small on the wire, too large once decompressed
    status, _, _ = await post(
        port, "traces", squeezed, "application/x-protobuf", **{"Content-Encoding": "gzip"}
    )
    assert status == 413
    assert await total_length(redis, "spans", 1) == 0


async def test_valkey_down_is_503_with_retry_after(
    processes: Processes, write_manifest: Any, valkey: EmbeddedValkey
) -> None:
    manifest = write_manifest(
        "    - {name: spans, partitions: 1}\n", "  ingest:\n    otlp: {traces: spans}\n"
    )
    port = processes.ingest(manifest)
    valkey.kill()
    body = span_request(bytes(range(16))).SerializeToString()

    async def unavailable() -> bool:
        status, reply, headers = await post(port, "traces", body, "application/x-protobuf")
        return (
            status == 503
            and headers["Retry-After"] == "1"
            and Status.FromString(reply).code == 14  # UNAVAILABLE
        )

    await wait_for(unavailable)
