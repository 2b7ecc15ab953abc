"""Traces of the pipeline itself: `hda run`'s ingest, worker and output processes export spans
to a real OTLP/HTTP receiver (an aiohttp server decoding the protobuf requests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tests.runtime.conftest import read_output_events, stream_entries, wait_for

from hda.runtime.codec import FIELD_TRACE, input_key, output_key
from hda.runtime.embedded import EmbeddedValkey, free_port
from hda.runtime.local import LocalPipeline
from hda.runtime.resp import RespConnection
from hda.runtime.tracing import TraceParent, decode_contexts, format_traceparent

pytestmark = pytest.mark.runtime

CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7


@dataclass
class ExportedSpan:
    service: str
    resource: dict[str, str]
    span: Span


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, with its resource."""

    port: int = 0
    requests: int = 0
    spans: list[ExportedSpan] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(await request.read())
        self.requests += 1
        for resource_spans in message.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(
                    ExportedSpan(resource["service.name"], resource, span)
                    for span in scope_spans.spans
                )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def of(self, service: str, trace_id: int) -> list[Span]:
        wanted = trace_id.to_bytes(16, "big")
        return [s.span for s in self.spans if s.service == service and s.span.trace_id == wanted]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(port=free_port())
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    yield receiver
    await runner.cleanup()


@pytest.fixture
def fast_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The components inherit this: BatchSpanProcessor exports every 100 ms instead of 5 s."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")


@pytest.fixture
def start_pipeline(tmp_path: Path, valkey: EmbeddedValkey, write_manifest: Any) -> Iterator[Any]:
    """`hda run` (LocalPipeline) of a manifest with this tracing section, on the test's Valkey;
    the worker never trims, so the tests can read the entries' fields afterwards."""
    started: list[LocalPipeline] = []

    def start(tracing: str) -> LocalPipeline:
        manifest = write_manifest(
            "    - {name: events, partitions: 1}\n",
            f"  observability:\n    tracing: {tracing}\n",
        )
        pipeline = LocalPipeline(
            manifest,
            data_dir=tmp_path / "run",
            redis_url=valkey.url,
            workers=1,
            ingest_port=free_port(),
            output_port=free_port(),
            worker_args=["--trim-interval", "3600"],
        )
        started.append(pipeline)
        pipeline.start()
        return pipeline

    yield start
    for pipeline in started:
        pipeline.stop()


async def post_event(pipeline: LocalPipeline, headers: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{pipeline.ingest_port}/v1/streams/events/events",
            data=orjson.dumps({"order": 1}),
            headers={"Content-Type": "application/json", **headers},
        ) as response,
    ):
        assert response.status == 202, await response.text()


def durable_events(pipeline: LocalPipeline) -> int:
    return len(read_output_events(pipeline.output_dir / "events")[0])


def caller_header(flags: int) -> dict[str, str]:
    caller = TraceParent(CALLER_TRACE_ID, CALLER_SPAN_ID, flags)
    return {"traceparent": format_traceparent(caller), "tracestate": "vendor=abc"}


async def test_one_trace_crosses_ingest_worker_and_output_with_links(
    receiver: Receiver, fast_export: None, start_pipeline: Any, redis: RespConnection
) -> None:
    pipeline = await asyncio.to_thread(
        start_pipeline, f"{{enabled: true, endpoint: '{receiver.endpoint}', sampleRatio: 1.0}}"
    )
    await post_event(pipeline, caller_header(flags=0x01))

    def three_services() -> bool:
        return all(
            receiver.of(service, CALLER_TRACE_ID)
            for service in ("hda-ingest", "hda-worker", "hda-output")
        )

    await wait_for(three_services, within=30)
    (ingest,) = receiver.of("hda-ingest", CALLER_TRACE_ID)
    (worker,) = receiver.of("hda-worker", CALLER_TRACE_ID)
    (output,) = receiver.of("hda-output", CALLER_TRACE_ID)
    # ingest continues the caller; worker and output are children of the previous hop ...
    assert ingest.parent_span_id == CALLER_SPAN_ID.to_bytes(8, "big")
    assert ingest.kind == Span.SPAN_KIND_SERVER
    assert worker.parent_span_id == ingest.span_id
    assert output.parent_span_id == worker.span_id
    # ... and link to every context of their batch (here one each)
    assert [(link.trace_id, link.span_id) for link in worker.links] == [
        (ingest.trace_id, ingest.span_id)
    ]
    assert [(link.trace_id, link.span_id) for link in output.links] == [
        (worker.trace_id, worker.span_id)
    ]
    # the caller's tracestate goes along (the SDK's exporter leaves it out of links)
    assert [ingest.trace_state, worker.trace_state, output.trace_state] == ["vendor=abc"] * 3
    # the context travelled in the stream entries
    ((_, input_fields),) = await stream_entries(redis, input_key("events", 0))
    ((_, output_fields),) = await stream_entries(redis, output_key("events", 0))
    (entry_context,) = decode_contexts(input_fields[FIELD_TRACE])
    assert entry_context.span_id.to_bytes(8, "big") == ingest.span_id
    assert entry_context.state == "vendor=abc"
    (output_context,) = decode_contexts(output_fields[FIELD_TRACE])
    assert output_context.span_id.to_bytes(8, "big") == worker.span_id
    resources = {s.service: s.resource for s in receiver.spans}
    for service in ("hda-ingest", "hda-worker", "hda-output"):
        assert resources[service]["hda.name"] == "test"
        assert resources[service]["k8s.namespace.name"] == "default"


async def test_a_caller_that_did_not_sample_is_not_traced_at_ratio_one(
    receiver: Receiver, fast_export: None, start_pipeline: Any, redis: RespConnection
) -> None:
    pipeline = await asyncio.to_thread(
        start_pipeline, f"{{enabled: true, endpoint: '{receiver.endpoint}', sampleRatio: 1.0}}"
    )
    await post_event(pipeline, caller_header(flags=0x00))
    await post_event(pipeline, {})  # no context: the ratio decides, 1.0 traces it
    await wait_for(lambda: durable_events(pipeline) == 2, within=30)
    await asyncio.to_thread(pipeline.stop)  # providers flush their queues at exit
    assert {s.service for s in receiver.spans} == {"hda-ingest", "hda-worker", "hda-output"}
    assert receiver.of("hda-ingest", CALLER_TRACE_ID) == []
    entries = await stream_entries(redis, input_key("events", 0))
    assert [FIELD_TRACE in fields for _, fields in entries] == [False, True]


async def test_tracing_off_exports_nothing_and_writes_no_context(
    receiver: Receiver, fast_export: None, start_pipeline: Any, redis: RespConnection
) -> None:
    pipeline = await asyncio.to_thread(
        start_pipeline, f"{{enabled: false, endpoint: '{receiver.endpoint}', sampleRatio: 1.0}}"
    )
    await post_event(pipeline, caller_header(flags=0x01))
    await wait_for(lambda: durable_events(pipeline) == 1, within=30)
    await asyncio.to_thread(pipeline.stop)  # a provider would flush its queue at exit
    entries = [
        *await stream_entries(redis, input_key("events", 0)),
        *await stream_entries(redis, output_key("events", 0)),
    ]
    assert len(entries) == 2
    assert all(FIELD_TRACE not in fields for _, fields in entries)
    assert receiver.requests == 0
