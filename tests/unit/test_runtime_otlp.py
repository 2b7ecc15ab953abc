"""OTLP decoding and mapping (pure): both encodings give the same events, keys as documented."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from hda.api.v1alpha1 import HyperDriveAcceleratorSpec
from hda.runtime.config import from_spec
from hda.runtime.otlp.decode import Encoding, MalformedRequestError, decode_request
from hda.runtime.otlp.mapping import map_request

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"

# The OTLP/JSON example shape: hex IDs, enums as integers, int64 as strings.
LOGS_JSON: dict[str, Any] = {
    "resourceLogs": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
            "scopeLogs": [
                {
                    "scope": {
                        "name": "lib",
                        "version": "1.0",
                        "attributes": [{"key": "s", "value": {"boolValue": True}}],
                    },
                    "logRecords": [
                        {
                            "timeUnixNano": "1544712660300000000",
                            "observedTimeUnixNano": "1544712660300000001",
                            "severityNumber": 10,
                            "severityText": "Information",
                            "traceId": TRACE_HEX,
                            "spanId": SPAN_HEX,
                            "body": {
                                "kvlistValue": {
                                    "values": [
                                        {"key": "msg", "value": {"stringValue": "hi"}},
                                        {"key": "n", "value": {"intValue": "7"}},
                                        {
                                            "key": "list",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [
                                                        {"doubleValue": 1.5},
                                                        {"bytesValue": "AQI="},
                                                    ]
                                                }
                                            },
                                        },
                                    ]
                                }
                            },
                            "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}],
                            "unknownFutureField": 1,
                        }
                    ],
                }
            ],
        }
    ]
}

EXPECTED_LOG = {
    "resource": {"service.name": "api"},
    "resourceSchemaUrl": "https://opentelemetry.io/schemas/1.26.0",
    "scope": {"name": "lib", "version": "1.0", "attributes": {"s": True}},
    "timeUnixNano": 1544712660300000000,
    "observedTimeUnixNano": 1544712660300000001,
    "severityNumber": 10,
    "severityText": "Information",
    "body": {"msg": "hi", "n": 7, "list": [1.5, "AQI="]},
    "attributes": {"http.method": "GET"},
    "traceId": TRACE_HEX,
    "spanId": SPAN_HEX,
}


def test_otlp_json_log_record_becomes_the_documented_event() -> None:
    request = decode_request("logs", orjson.dumps(LOGS_JSON), Encoding.JSON)
    mapped = map_request(request)
    assert mapped.events == [EXPECTED_LOG]
    assert mapped.rejected == 0


def test_protobuf_of_the_same_request_gives_the_same_event() -> None:
    via_json = decode_request("logs", orjson.dumps(LOGS_JSON), Encoding.JSON)
    assert isinstance(via_json, ExportLogsServiceRequest)
    body = via_json.SerializeToString()
    assert map_request(decode_request("logs", body, Encoding.PROTOBUF)).events == [EXPECTED_LOG]


def test_int64_as_numbers_and_snake_case_ids_are_accepted() -> None:
    record = LOGS_JSON["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    variant = {**record, "timeUnixNano": 1544712660300000000}
    del variant["traceId"]
    variant["trace_id"] = TRACE_HEX
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [variant]}]}]}
    (event,) = map_request(decode_request("logs", orjson.dumps(document), Encoding.JSON)).events
    assert event["timeUnixNano"] == 1544712660300000000
    assert event["traceId"] == TRACE_HEX


def test_log_record_with_a_short_span_id_is_refused_alone() -> None:
    records = [{"spanId": "0102"}, {"body": {"stringValue": "kept"}}]
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    mapped = map_request(decode_request("logs", orjson.dumps(document), Encoding.JSON))
    assert [e["body"] for e in mapped.events] == ["kept"]
    assert mapped.rejected == 1
    assert mapped.error == "log record: spanId has 2 bytes, expected 8"


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (b"[]", Encoding.JSON, "expected a JSON object"),
        (b"{", Encoding.JSON, "invalid JSON"),
        (b'{"resourceLogs": [{"scopeLogs": 5}]}', Encoding.JSON, "invalid OTLP/JSON"),
        (
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}',
            Encoding.JSON,
            "resourceLogs[0].scopeLogs[0].logRecords[0].traceId: 'xyz' is not a hex ID",
        ),
        (b"\x0a\x05\x0a", Encoding.PROTOBUF, "invalid protobuf"),
    ],
)
def test_malformed_bodies_name_the_problem(body: bytes, encoding: Encoding, message: str) -> None:
    with pytest.raises(
        MalformedRequestError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        decode_request("logs", body, encoding)


def metrics_request(metric: dict[str, Any]) -> ExportMetricsServiceRequest:
    document = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    return json_format.ParseDict(document, ExportMetricsServiceRequest())


def test_every_metric_type_maps_each_data_point_to_an_event() -> None:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    for metric in (
        metrics_request(
            {"name": "g", "gauge": {"dataPoints": [{"asDouble": 0.5}, {"asInt": "2"}]}}
        ),
        metrics_request(
            {
                "name": "e",
                "exponentialHistogram": {
                    "aggregationTemporality": 1,
                    "dataPoints": [
                        {
                            "count": "3",
                            "sum": 6.0,
                            "scale": 2,
                            "zeroCount": "1",
                            "positive": {"offset": -1, "bucketCounts": ["1", "1"]},
                            "exemplars": [{"asDouble": 0.0, "traceId": TRACE_HEX}],
                        }
                    ],
                },
            }
        ),
        metrics_request(
            {
                "name": "q",
                "summary": {
                    "dataPoints": [
                        {
                            "count": "2",
                            "sum": 3.0,
                            "quantileValues": [{"quantile": 0.5, "value": 1.0}],
                        }
                    ]
                },
            }
        ),
    ):
        scope.metrics.extend(metric.resource_metrics[0].scope_metrics[0].metrics)
    # The JSON path converted TRACE_HEX as hex; this one built the message directly.
    exemplar = scope.metrics[1].exponential_histogram.data_points[0].exemplars[0]
    exemplar.trace_id = bytes.fromhex(TRACE_HEX)
    events = map_request(request).events
    assert [(e["metric"]["name"], e["metric"]["type"]) for e in events] == [
        ("g", "gauge"),
        ("g", "gauge"),
        ("e", "exponentialHistogram"),
        ("q", "summary"),
    ]
    assert [events[0]["value"], events[1]["value"]] == [0.5, 2]
    histogram = events[2]
    assert histogram["metric"]["aggregationTemporality"] == 1
    assert histogram["positive"] == {"offset": -1, "bucketCounts": [1, 1]}
    assert histogram["exemplars"] == [{"timeUnixNano": 0, "value": 0.0, "traceId": TRACE_HEX}]
    assert events[3]["quantileValues"] == [{"quantile": 0.5, "value": 1.0}]


def test_spec_maps_signals_to_streams_and_refuses_an_unknown_stream() -> None:
    spec = HyperDriveAcceleratorSpec.model_validate(
        {"streams": [{"name": "otel"}], "ingest": {"otlp": {"logs": "otel", "traces": "otel"}}}
    )
    assert from_spec(spec).otlp_streams == {"logs": "otel", "traces": "otel"}
    with pytest.raises(ValueError, match=r"ingest.otlp.metrics: stream 'nope' is not in spec"):
        HyperDriveAcceleratorSpec.model_validate(
            {"streams": [{"name": "otel"}], "ingest": {"otlp": {"metrics": "nope"}}}
        )
