"""OTLP ingest: which stream each OpenTelemetry signal lands in."""

from __future__ import annotations

from pydantic import Field

from .types import ApiModel, StreamName, cel

OTLP_SIGNALS = ("logs", "metrics", "traces")


class OtlpIngest(ApiModel):
    """OTLP/HTTP on the ingest port: POST /v1/logs, /v1/metrics and /v1/traces."""

    logs: StreamName | None = Field(
        default=None,
        description="Stream that receives one event per OTLP log record; /v1/logs is 404 if unset.",
    )
    metrics: StreamName | None = Field(
        default=None,
        description="Stream that receives one event per OTLP metric data point; /v1/metrics is 404 if unset.",
    )
    traces: StreamName | None = Field(
        default=None,
        description="Stream that receives one event per OTLP span; /v1/traces is 404 if unset.",
    )

    def streams(self) -> dict[str, str]:
        """Signal (`logs`, `metrics`, `traces`) -> stream name, for the signals that have one."""
        return {
            signal: name for signal in OTLP_SIGNALS if (name := getattr(self, signal)) is not None
        }


def otlp_stream_rules() -> list[dict[str, str]]:
    """CEL rules of the whole spec: every stream named under ingest.otlp exists in streams."""
    return [
        cel(
            f"!has(self.ingest.otlp) || !has(self.ingest.otlp.{signal}) || "
            f"self.streams.exists(s, s.name == self.ingest.otlp.{signal})",
            f"ingest.otlp.{signal} must name a stream in spec.streams",
            field_path=f".ingest.otlp.{signal}",
        )
        for signal in OTLP_SIGNALS
    ]
