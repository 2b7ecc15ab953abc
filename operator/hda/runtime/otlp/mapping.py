"""OTLP request messages -> HDA events: one per log record, metric data point or span.

Pure functions. Every event carries, as plain JSON (docs/otlp.md lists the keys):
- `resource`: the resource attributes as one flat object keyed by attribute name
  (`{"service.name": "checkout"}`), `resourceSchemaUrl` when set;
- `scope`: `{"name", "version", "attributes"}` of the instrumentation scope, `scopeSchemaUrl`;
- the item's own fields under their OTLP/JSON names (lowerCamelCase), with timestamps as integer
  nanoseconds, enums as integers, trace and span IDs as lowercase hex, and attributes flat.
Fields that are empty in OTLP (proto3 defaults: "", 0, no IDs) are left out, except the
timestamps, which are always present.

An item whose trace or span ID has the wrong length (or a span without one) is refused and
counted: the handler reports it in `partial_success`, and the rest of the request is written.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .decode import ExportRequest

Event = dict[str, Any]

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8


@dataclass
class Mapped:
    """The events of one request, and the items refused with the first reason."""

    events: list[Event] = field(default_factory=list)
    rejected: int = 0
    error: str = ""

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if not self.error:
            self.error = reason


def map_request(request: ExportRequest) -> Mapped:
    if isinstance(request, ExportLogsServiceRequest):
        return map_logs(request)
    if isinstance(request, ExportMetricsServiceRequest):
        return map_metrics(request)
    return map_traces(request)


# --- values -----------------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An AnyValue as plain JSON; bytes as base64 (as OTLP/JSON writes them), unset as null."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as one flat object keyed by attribute name (a repeated key: the last wins)."""
    return {pair.key: any_value(pair.value) for pair in pairs}


def _context(
    resource: Resource, resource_schema: str, scope: InstrumentationScope, scope_schema: str
) -> Event:
    """What every event of one resource and scope shares (copied into each event)."""
    context: Event = {"resource": attributes(resource.attributes)}
    if resource_schema:
        context["resourceSchemaUrl"] = resource_schema
    scope_fields: Event = {}
    if scope.name:
        scope_fields["name"] = scope.name
    if scope.version:
        scope_fields["version"] = scope.version
    if scope.attributes:
        scope_fields["attributes"] = attributes(scope.attributes)
    context["scope"] = scope_fields
    if scope_schema:
        context["scopeSchemaUrl"] = scope_schema
    return context


def _id_problem(value: bytes, size: int, what: str, *, required: bool) -> str | None:
    """Why an ID is unusable, or None: it must be `size` bytes; empty is fine unless required."""
    if not value:
        return f"{what} is missing" if required else None
    if len(value) != size:
        return f"{what} has {len(value)} bytes, expected {size}"
    return None


# --- logs -------------------------------------------------------------------------------------


def map_logs(request: ExportLogsServiceRequest) -> Mapped:
    mapped = Mapped()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            context = _context(
                resource_logs.resource,
                resource_logs.schema_url,
                scope_logs.scope,
                scope_logs.schema_url,
            )
            for record in scope_logs.log_records:
                problem = _id_problem(
                    record.trace_id, TRACE_ID_BYTES, "traceId", required=False
                ) or _id_problem(record.span_id, SPAN_ID_BYTES, "spanId", required=False)
                if problem:
                    mapped.reject(f"log record: {problem}")
                    continue
                mapped.events.append({**context, **log_record(record)})
    return mapped


def log_record(record: LogRecord) -> Event:
    event: Event = {
        "timeUnixNano": record.time_unix_nano,
        "observedTimeUnixNano": record.observed_time_unix_nano,
    }
    if record.severity_number:
        event["severityNumber"] = record.severity_number
    if record.severity_text:
        event["severityText"] = record.severity_text
    if record.HasField("body"):
        event["body"] = any_value(record.body)
    if record.attributes:
        event["attributes"] = attributes(record.attributes)
    if record.dropped_attributes_count:
        event["droppedAttributesCount"] = record.dropped_attributes_count
    if record.flags:
        event["flags"] = record.flags
    if record.trace_id:
        event["traceId"] = record.trace_id.hex()
    if record.span_id:
        event["spanId"] = record.span_id.hex()
    if record.event_name:
        event["eventName"] = record.event_name
    return event


# --- traces -----------------------------------------------------------------------------------


def map_traces(request: ExportTraceServiceRequest) -> Mapped:
    mapped = Mapped()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            context = _context(
                resource_spans.resource,
                resource_spans.schema_url,
                scope_spans.scope,
                scope_spans.schema_url,
            )
            for span in scope_spans.spans:
                problem = (
                    _id_problem(span.trace_id, TRACE_ID_BYTES, "traceId", required=True)
                    or _id_problem(span.span_id, SPAN_ID_BYTES, "spanId", required=True)
                    or _id_problem(
                        span.parent_span_id, SPAN_ID_BYTES, "parentSpanId", required=False
                    )
                )
                if problem:
                    mapped.reject(f"span {span.name!r}: {problem}")
                    continue
                mapped.events.append({**context, **span_event(span)})
    return mapped


def span_event(span: Span) -> Event:
    event: Event = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": span.start_time_unix_nano,
        "endTimeUnixNano": span.end_time_unix_nano,
    }
    if span.parent_span_id:
        event["parentSpanId"] = span.parent_span_id.hex()
    if span.trace_state:
        event["traceState"] = span.trace_state
    if span.flags:
        event["flags"] = span.flags
    if span.attributes:
        event["attributes"] = attributes(span.attributes)
    if span.dropped_attributes_count:
        event["droppedAttributesCount"] = span.dropped_attributes_count
    if span.events:
        event["events"] = [
            _without_empty(
                {
                    "timeUnixNano": item.time_unix_nano,
                    "name": item.name,
                    "attributes": attributes(item.attributes),
                    "droppedAttributesCount": item.dropped_attributes_count,
                }
            )
            for item in span.events
        ]
    if span.dropped_events_count:
        event["droppedEventsCount"] = span.dropped_events_count
    if span.links:
        event["links"] = [
            _without_empty(
                {
                    "traceId": link.trace_id.hex(),
                    "spanId": link.span_id.hex(),
                    "traceState": link.trace_state,
                    "attributes": attributes(link.attributes),
                    "droppedAttributesCount": link.dropped_attributes_count,
                    "flags": link.flags,
                }
            )
            for link in span.links
        ]
    if span.dropped_links_count:
        event["droppedLinksCount"] = span.dropped_links_count
    if span.HasField("status"):
        event["status"] = _without_empty({"code": span.status.code, "message": span.status.message})
    return event


# --- metrics ----------------------------------------------------------------------------------

NumberOrHistogramPoint = (
    NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint | SummaryDataPoint
)


def map_metrics(request: ExportMetricsServiceRequest) -> Mapped:
    mapped = Mapped()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            context = _context(
                resource_metrics.resource,
                resource_metrics.schema_url,
                scope_metrics.scope,
                scope_metrics.schema_url,
            )
            for metric in scope_metrics.metrics:
                description = metric_description(metric)
                for point in _data_points(metric):
                    problem = _exemplar_problem(point)
                    if problem:
                        mapped.reject(f"metric {metric.name!r} data point: {problem}")
                        continue
                    mapped.events.append(
                        {**context, "metric": description, **data_point(metric, point)}
                    )
    return mapped


def metric_description(metric: Metric) -> Event:
    """Name, unit, type and the type's aggregation fields, shared by the metric's points."""
    kind = metric.WhichOneof("data") or ""
    described: Event = {"name": metric.name, "type": _METRIC_TYPES.get(kind, kind)}
    if metric.description:
        described["description"] = metric.description
    if metric.unit:
        described["unit"] = metric.unit
    if metric.metadata:
        described["metadata"] = attributes(metric.metadata)
    if kind == "sum":
        described["aggregationTemporality"] = metric.sum.aggregation_temporality
        described["isMonotonic"] = metric.sum.is_monotonic
    elif kind == "histogram":
        described["aggregationTemporality"] = metric.histogram.aggregation_temporality
    elif kind == "exponential_histogram":
        described["aggregationTemporality"] = metric.exponential_histogram.aggregation_temporality
    return described


_METRIC_TYPES = {"exponential_histogram": "exponentialHistogram"}


def _data_points(metric: Metric) -> Iterable[NumberOrHistogramPoint]:
    kind = metric.WhichOneof("data")
    if kind == "gauge":
        return metric.gauge.data_points
    if kind == "sum":
        return metric.sum.data_points
    if kind == "histogram":
        return metric.histogram.data_points
    if kind == "exponential_histogram":
        return metric.exponential_histogram.data_points
    if kind == "summary":
        return metric.summary.data_points
    return ()


def _exemplar_problem(point: NumberOrHistogramPoint) -> str | None:
    if isinstance(point, SummaryDataPoint):
        return None
    for exemplar in point.exemplars:
        problem = _id_problem(
            exemplar.trace_id, TRACE_ID_BYTES, "exemplar traceId", required=False
        ) or _id_problem(exemplar.span_id, SPAN_ID_BYTES, "exemplar spanId", required=False)
        if problem:
            return problem
    return None


def data_point(metric: Metric, point: NumberOrHistogramPoint) -> Event:
    event: Event = {
        "startTimeUnixNano": point.start_time_unix_nano,
        "timeUnixNano": point.time_unix_nano,
    }
    if point.attributes:
        event["attributes"] = attributes(point.attributes)
    if point.flags:
        event["flags"] = point.flags
    if isinstance(point, NumberDataPoint):
        event["value"] = _number(point)
    elif isinstance(point, HistogramDataPoint):
        event["count"] = point.count
        if point.HasField("sum"):
            event["sum"] = point.sum
        event["bucketCounts"] = list(point.bucket_counts)
        event["explicitBounds"] = list(point.explicit_bounds)
        _min_max(point, event)
    elif isinstance(point, ExponentialHistogramDataPoint):
        event["count"] = point.count
        if point.HasField("sum"):
            event["sum"] = point.sum
        event["scale"] = point.scale
        event["zeroCount"] = point.zero_count
        if point.zero_threshold:
            event["zeroThreshold"] = point.zero_threshold
        for side in ("positive", "negative"):
            buckets = getattr(point, side)
            if buckets.bucket_counts:
                event[side] = {
                    "offset": buckets.offset,
                    "bucketCounts": list(buckets.bucket_counts),
                }
        _min_max(point, event)
    else:
        event["count"] = point.count
        event["sum"] = point.sum
        event["quantileValues"] = [
            {"quantile": q.quantile, "value": q.value} for q in point.quantile_values
        ]
    if not isinstance(point, SummaryDataPoint) and point.exemplars:
        event["exemplars"] = [_exemplar(exemplar) for exemplar in point.exemplars]
    return event


def _number(point: NumberDataPoint | Exemplar) -> int | float | None:
    kind = point.WhichOneof("value")
    if kind == "as_int":
        return point.as_int
    if kind == "as_double":
        return point.as_double
    return None


def _min_max(point: HistogramDataPoint | ExponentialHistogramDataPoint, event: Event) -> None:
    if point.HasField("min"):
        event["min"] = point.min
    if point.HasField("max"):
        event["max"] = point.max


def _exemplar(exemplar: Exemplar) -> Event:
    return _without_empty(
        {
            "timeUnixNano": exemplar.time_unix_nano,
            "value": _number(exemplar),
            "filteredAttributes": attributes(exemplar.filtered_attributes),
            "traceId": exemplar.trace_id.hex(),
            "spanId": exemplar.span_id.hex(),
        }
    )


def _without_empty(fields: Event) -> Event:
    """Leave out what OTLP leaves empty: "", null, {} and zero counts and flags (numbers stay)."""
    return {
        key: value
        for key, value in fields.items()
        if not (
            value is None
            or (isinstance(value, str | dict | list) and not value)
            or (value == 0 and (key == "flags" or key.startswith("dropped")))
        )
    }
