"""OTLP/HTTP request bodies -> the official generated request messages.

Protobuf (`application/x-protobuf`) parses as it is. JSON (`application/json`) follows the OTLP
JSON mapping, which differs from the proto3 one in one way the generic parser cannot know:
trace and span IDs are hex, not base64. Those are converted first; the rest (lowerCamelCase
keys, enums as integers, 64-bit integers as strings or numbers, unknown fields ignored) is what
`json_format` accepts. gzip is undone by aiohttp before the body is read, within maxRequestBytes.
"""

from __future__ import annotations

import base64
from enum import Enum
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"

ExportRequest = ExportLogsServiceRequest | ExportMetricsServiceRequest | ExportTraceServiceRequest
ExportResponse = (
    ExportLogsServiceResponse | ExportMetricsServiceResponse | ExportTraceServiceResponse
)

REQUEST_TYPES: dict[str, type[ExportRequest]] = {
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "traces": ExportTraceServiceRequest,
}

# In OTLP/JSON these fields hold hex; everywhere else `bytes` is base64 as in proto3 JSON.
_HEX_ID_FIELDS = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)


class Encoding(Enum):
    PROTOBUF = PROTOBUF_TYPE
    JSON = JSON_TYPE


class MalformedRequestError(ValueError):
    """A body that is not a valid OTLP request in its encoding; the message says where."""


def encoding_of(content_type: str) -> Encoding | None:
    """The encoding a Content-Type names, or None for one OTLP/HTTP does not define."""
    for encoding in Encoding:
        if content_type == encoding.value:
            return encoding
    return None


def decode_request(signal: str, body: bytes, encoding: Encoding) -> ExportRequest:
    message = REQUEST_TYPES[signal]()
    if encoding is Encoding.PROTOBUF:
        try:
            message.ParseFromString(body)
        except DecodeError as error:
            raise MalformedRequestError(f"invalid protobuf: {error}") from None
        return message
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedRequestError(f"invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise MalformedRequestError(
            f"expected a JSON object (an Export{signal.capitalize()}ServiceRequest), "
            f"got {type(document).__name__}"
        )
    _hex_ids_to_base64(document, [])
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise MalformedRequestError(f"invalid OTLP/JSON: {error}") from None
    return message


def _hex_ids_to_base64(node: Any, path: list[str]) -> None:
    """Rewrite every hex trace/span ID in place as base64, naming the field of a bad one."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    where = "".join([*path, f".{key}"]).lstrip(".")
                    raise MalformedRequestError(
                        f"{where}: {value!r} is not a hex ID (OTLP/JSON encodes IDs as hex)"
                    ) from None
            elif isinstance(value, dict | list):
                path.append(f".{key}")
                _hex_ids_to_base64(value, path)
                path.pop()
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                path.append(f"[{index}]")
                _hex_ids_to_base64(item, path)
                path.pop()


def encode_message(message: Message, encoding: Encoding) -> bytes:
    """A response (or google.rpc.Status) in the encoding of the request."""
    if encoding is Encoding.PROTOBUF:
        return message.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(message))
