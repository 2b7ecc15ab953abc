"""Ingest: the REST and WebSocket Deployment producers write to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import SecretKeyRef
from .otlp import OtlpIngest
from .types import ApiModel


class IngestService(ApiModel):
    """The Service in front of the ingest pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")


class Backpressure(ApiModel):
    """When ingest stops accepting events."""

    max_backlog: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "Events waiting in a stream (undelivered plus pending) above which ingest answers "
            "429 with Retry-After, and WebSocket clients stop being read."
        ),
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, le=3600, description="Retry-After value sent with a 429."
    )


class IngestSpec(ApiModel):
    """The REST and WebSocket ingest Deployment."""

    replicas: int = Field(default=2, ge=0, le=100, description="Ingest pods.")
    service: IngestService = Field(
        default_factory=IngestService,
        description="How ingest is exposed.",
        json_schema_extra={"default": {}},
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest accepted request body or WebSocket frame, in bytes (413 above it).",
    )
    backpressure: Backpressure = Field(
        default_factory=Backpressure,
        description="Backlog watermark for pushing back.",
        json_schema_extra={"default": {}},
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "A Secret key holding the bearer token producers must send; no auth if unset. New "
            "content rolls the ingest pods; a value ending with a line break is refused."
        ),
    )
    accept_token_in_query: bool = Field(
        default=False,
        description=(
            "Also accept the bearer token as the query parameter `?token=` on ingest and output "
            "subscribe (for browsers, whose WebSocket API cannot set an Authorization header). "
            "Off by default: URLs end up in access logs and browser history."
        ),
    )
    idempotency_window_seconds: int = Field(
        default=600,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "How long ingest remembers a request's `Idempotency-Key` (REST header; WebSocket: "
            "per connection, see the docs): a request sent again with the same key in this "
            "window is answered with the first one's receipt and stored only once. Each "
            "remembered request holds about 200 bytes of Valkey memory per partition it wrote."
        ),
    )
    otlp: OtlpIngest | None = Field(
        default=None,
        description="OTLP/HTTP ingest: the stream each OpenTelemetry signal is written to.",
    )
