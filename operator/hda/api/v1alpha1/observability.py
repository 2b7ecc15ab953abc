"""Observability of the pipeline itself: traces of requests through ingest, workers and output."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from .types import ApiModel, cel, cel_rules

# http(s), a host, an optional path; no query or fragment (the exporter appends /v1/traces).
ENDPOINT_PATTERN = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"
ENDPOINT_MAX_LENGTH = 2048
ENDPOINT_REQUIRED = "endpoint is required when tracing is enabled"
ENDPOINT_IS_BASE = "endpoint is the receiver's base URL: /v1/traces is appended to it"


class TracingSpec(ApiModel):
    """Spans of the pipeline: ingest starts one per request, workers and output continue it."""

    model_config = cel_rules(
        # has(): the apiserver also checks the rules against the schema default `{}`.
        cel(
            "!has(self.enabled) || !self.enabled || has(self.endpoint)",
            ENDPOINT_REQUIRED,
            field_path=".endpoint",
        ),
        cel(
            "!has(self.endpoint) || !self.endpoint.matches('/v1/traces/?$')",
            ENDPOINT_IS_BASE,
            field_path=".endpoint",
        ),
    )

    enabled: bool = Field(default=False, description="Export spans; off by default.")
    endpoint: str | None = Field(
        default=None,
        max_length=ENDPOINT_MAX_LENGTH,
        pattern=ENDPOINT_PATTERN,
        description=(
            "Base URL of an OTLP/HTTP (protobuf) receiver, e.g. http://otel-collector.monitoring:4318; "
            "spans are POSTed to <endpoint>/v1/traces."
        ),
    )
    sample_ratio: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Share of requests traced when the caller sent no sampled trace context (0..1); a "
            "request carrying a `traceparent` follows its sampled flag."
        ),
    )

    @model_validator(mode="after")
    def _endpoint_rules(self) -> Self:
        if self.enabled and self.endpoint is None:
            raise ValueError(ENDPOINT_REQUIRED)
        if self.endpoint is not None and self.endpoint.rstrip("/").endswith("/v1/traces"):
            raise ValueError(f"{ENDPOINT_IS_BASE}, got {self.endpoint!r}")
        return self


class ObservabilitySpec(ApiModel):
    """How the pipeline reports on itself (metrics are always on /metrics)."""

    tracing: TracingSpec = Field(
        default_factory=TracingSpec,
        description="OpenTelemetry traces of requests through ingest, workers and output.",
        json_schema_extra={"default": {}},
    )
