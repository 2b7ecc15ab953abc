"""Traces of the pipeline itself (spec.observability.tracing): one helper the components call.

Ingest starts a span per request (parent-based: a caller's sampled `traceparent` is continued,
otherwise `sampleRatio` of new traces are kept). Each sampled request's W3C context travels in
the input entry's FIELD_TRACE. Entries coalesce many requests and workers and output handle
many entries per batch, so their batch span is a child of the batch's first context (one trace
id runs from a request to its durable write) and links to every context in the batch, first
one included; the worker puts its batch span's context into each output entry it writes.

Off (config.tracing None): no tracer provider exists, the SDK is not imported (only the light
API package), no field is written and every call here returns at once.

FIELD_TRACE holds one context per line, `traceparent` optionally followed by a tab and the
`tracestate` header (neither may contain a tab or a line break).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    TraceState,
    get_current_span,
    set_span_in_context,
    use_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .codec import FIELD_TRACE
from .config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

SERVICE_INGEST = "hda-ingest"
SERVICE_WORKER = "hda-worker"
SERVICE_OUTPUT = "hda-output"
ATTRIBUTE_HDA_NAME = "hda.name"
ATTRIBUTE_NAMESPACE = "k8s.namespace.name"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_SAMPLED = 0x01


@dataclass(frozen=True)
class TraceParent:
    """A W3C trace context: the `traceparent` fields plus the raw `tracestate` header."""

    trace_id: int
    span_id: int
    flags: int
    state: str = ""

    @property
    def sampled(self) -> bool:
        return bool(self.flags & _SAMPLED)


def parse_traceparent(text: str, state: str = "") -> TraceParent:
    """A `traceparent` header value (W3C Trace Context level 1); the error names what is wrong."""
    match = _TRACEPARENT.match(text)
    if match is None:
        raise ValueError(
            f"traceparent {text!r}: expected VERSION-TRACEID-SPANID-FLAGS in lowercase hex "
            "(2-32-16-2 digits)"
        )
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff":
        raise ValueError(f"traceparent {text!r}: version ff is invalid")
    if version == "00" and rest is not None:
        raise ValueError(f"traceparent {text!r}: version 00 has exactly four fields")
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0:
        raise ValueError(f"traceparent {text!r}: the trace id is all zeros")
    if span_id == 0:
        raise ValueError(f"traceparent {text!r}: the parent id is all zeros")
    return TraceParent(trace_id, span_id, int(flags_hex, 16), state)


def format_traceparent(context: TraceParent) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.flags:02x}"


def encode_contexts(contexts: Iterable[TraceParent]) -> bytes:
    """The FIELD_TRACE value for these contexts."""
    return "\n".join(
        format_traceparent(c) + (f"\t{c.state}" if c.state else "") for c in contexts
    ).encode()


def decode_contexts(value: bytes) -> list[TraceParent]:
    """Contexts of a FIELD_TRACE value; a malformed line is skipped (tracing never fails data)."""
    contexts = []
    for line in value.decode(errors="replace").split("\n"):
        parent, _, state = line.partition("\t")
        try:
            contexts.append(parse_traceparent(parent, state))
        except ValueError as error:
            log.debug("trace context skipped", extra={"error": str(error)})
    return contexts


def _to_span_context(context: TraceParent) -> SpanContext:
    return SpanContext(
        trace_id=context.trace_id,
        span_id=context.span_id,
        is_remote=True,
        trace_flags=TraceFlags(context.flags),
        trace_state=TraceState.from_header([context.state]) if context.state else None,
    )


def _from_span_context(context: SpanContext) -> TraceParent:
    return TraceParent(
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        context.trace_state.to_header() if context.trace_state else "",
    )


def tracer_provider(config: TracingConfig, service: str, instance: str) -> TracerProvider:
    """An SDK provider exporting in batches to the configured OTLP/HTTP receiver (protobuf).

    BatchSpanProcessor honours the OTEL_BSP_* variables; the provider flushes at exit."""
    # The SDK and exporter take ~0.1 s to import: only processes that trace pay for them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    attributes: dict[str, str] = {"service.name": service, "service.instance.id": instance}
    if config.hda_name:
        attributes[ATTRIBUTE_HDA_NAME] = config.hda_name
    if config.hda_namespace:
        attributes[ATTRIBUTE_NAMESPACE] = config.hda_namespace
    provider = TracerProvider(
        sampler=ParentBased(root=TraceIdRatioBased(config.sample_ratio)),
        resource=Resource.create(attributes),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.traces_url)))
    return provider


class PipelineTracer:
    """The spans of one component; every method is a no-op when tracing is off."""

    def __init__(self, config: TracingConfig | None, service: str, instance: str) -> None:
        self.provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if config is not None:
            self.provider = tracer_provider(config, service, instance)
            self._tracer = self.provider.get_tracer("hda.runtime")
            log.info("tracing on", extra={"endpoint": config.traces_url, "service": service})

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    # --- ingest ---

    def request_middleware(self) -> Middleware:
        """An aiohttp middleware giving each request a SERVER span, continuing the caller's
        context; handlers run with it current, so `current_context` finds it. Only POSTs:
        probes, scrapes and WebSocket upgrades are not requests that carry events."""
        tracer = self._tracer
        assert tracer is not None
        propagator = TraceContextTextMapPropagator()

        @web.middleware
        async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method != "POST":
                return await handler(request)
            route = request.match_info.route.resource
            name = f"{request.method} {route.canonical if route is not None else request.path}"
            span = tracer.start_span(
                name,
                context=propagator.extract(request.headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": request.method, "url.path": request.path},
            )
            with use_span(span, end_on_exit=True):
                response = await handler(request)
                span.set_attribute("http.response.status_code", response.status)
                return response

        return trace_request

    def current_context(self) -> bytes | None:
        """FIELD_TRACE value of the current request's span if it is sampled, else None."""
        if self._tracer is None:
            return None
        context = get_current_span().get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return encode_contexts([_from_span_context(context)])

    # --- workers and output ---

    @contextlib.contextmanager
    def batch_span(
        self,
        name: str,
        fields: Iterable[Mapping[bytes, bytes] | None],
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[bytes]:
        """A CONSUMER span over a batch of entries (their fields), child of the first entry
        context and linked to all of them; yields its own FIELD_TRACE value, or b"" when off
        or when no entry carries a context (then no span exists)."""
        if self._tracer is None:
            yield b""
            return
        contexts = [
            c for f in fields if f and (v := f.get(FIELD_TRACE)) for c in decode_contexts(v)
        ]
        if not contexts:
            yield b""
            return
        links = _links(contexts)
        parent = set_span_in_context(_non_recording(contexts[0]))
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={**(attributes or {}), "messaging.batch.message_count": len(links)},
        )
        with use_span(span, end_on_exit=True):
            yield encode_contexts([_from_span_context(span.get_span_context())])

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


def _links(contexts: list[TraceParent]) -> list[Link]:
    seen: set[tuple[int, int]] = set()
    links = []
    for context in contexts:
        if (context.trace_id, context.span_id) not in seen:
            seen.add((context.trace_id, context.span_id))
            links.append(Link(_to_span_context(context)))
    return links


def _non_recording(context: TraceParent) -> NonRecordingSpan:
    return NonRecordingSpan(_to_span_context(context))
