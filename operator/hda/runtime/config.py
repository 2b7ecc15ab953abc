"""The runtime's view of an HDA spec: plain frozen dataclasses, built by one adapter.

The data path only needs a few numbers and the pipeline; keeping them in small dataclasses keeps
the hot loops free of pydantic attribute lookups, and the adapter (`from_spec`) is the one place
where the API model's meaning is translated.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hda.api.consts import (
    ENV_POD_NAME,
    INGEST_PORT,
    OUTPUT_DATA_DIR,
    OUTPUT_PORT,
    RUNTIME_CONFIG_PATH,
    WORKER_HEALTH_PORT,
)
from hda.api.v1alpha1 import (
    Acknowledge,
    HyperDriveAcceleratorSpec,
    PipelineStep,
    Topology,
    load_manifest,
    parse_duration,
    parse_quantity,
)

# The runtime contract (what the operator gives every runtime pod) lives in hda.api.consts.
ENV_CONFIG = "HDA_CONFIG"
ENV_REDIS_TIMEOUT = "HDA_REDIS_TIMEOUT"  # seconds; the default suits every deployment so far
ENV_CONSUMER_NAME = ENV_POD_NAME
DEFAULT_CONFIG_PATH = RUNTIME_CONFIG_PATH
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_OUTPUT_DIR = OUTPUT_DATA_DIR
DEFAULT_INGEST_PORT = INGEST_PORT
DEFAULT_OUTPUT_PORT = OUTPUT_PORT
DEFAULT_WORKER_PORT = WORKER_HEALTH_PORT

WORKER_GROUP = "hda-workers"
OUTPUT_GROUP = "hda-output"


@dataclass(frozen=True)
class StreamConfig:
    name: str
    partitions: int = 4
    partition_key: str | None = None
    retention_max_length: int | None = None
    retention_max_age_seconds: float | None = None


@dataclass(frozen=True)
class TracingConfig:
    """Where and how often the pipeline's own spans go (spec.observability.tracing, enabled)."""

    endpoint: str  # base URL of an OTLP/HTTP receiver; /v1/traces is appended
    sample_ratio: float
    hda_name: str = ""  # resource attributes of every span
    hda_namespace: str = ""

    @property
    def traces_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/traces"


@dataclass(frozen=True)
class RuntimeConfig:
    streams: tuple[StreamConfig, ...]
    max_request_bytes: int = 8 * 1024 * 1024
    max_backlog_events: int = 1_000_000
    retry_after_seconds: int = 1
    pipeline: tuple[PipelineStep, ...] = ()
    max_deliveries: int = 5
    dead_letter_max_length: int = 10_000
    dead_letter_max_age_seconds: float = 7 * 24 * 3600.0
    batch_size: int = 64
    segment_max_bytes: int = 256 * 1024 * 1024
    segment_max_age_seconds: float = 600.0
    segment_retention_max_age_seconds: float | None = 7 * 24 * 3600.0
    segment_retention_max_bytes: int | None = None  # None: a share of the volume's capacity
    subscriber_max_buffered_entries: int = 10_000
    subscribers_enabled: bool = True
    accept_token_in_query: bool = False  # `?token=` on ingest and subscribe
    idempotency_window_seconds: int = 600  # how long an Idempotency-Key is remembered
    output_replicas: int = 1  # the subscribe gateway's peers (re-read from the mounted spec)
    # OTLP signal (logs, metrics, traces) -> stream name; a signal missing here answers 404.
    otlp_streams: dict[str, str] = field(default_factory=dict)
    tracing: TracingConfig | None = None  # None: tracing off, no SDK set up
    # spec.redis.topology and .acknowledge. Where the sentinels or cluster nodes are is in the
    # URL (HDA_REDIS_URL: redis+sentinel:// or redis+cluster://): the operator knows the pods'
    # names, the manifest does not.
    topology: Topology = "standalone"
    acknowledge: Acknowledge = "primary"
    # Knobs the API does not expose (yet): ops defaults, overridable by CLI flags for tests.
    max_events_per_entry: int = 1000
    claim_idle_seconds: float = 30.0
    trim_interval_seconds: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def stream(self, name: str) -> StreamConfig | None:
        return next((s for s in self.streams if s.name == name), None)


def from_spec(
    spec: HyperDriveAcceleratorSpec, *, name: str = "", namespace: str = ""
) -> RuntimeConfig:
    """The one adapter from the API model to the runtime's configuration; `name` and
    `namespace` are the HDA's (a bare spec has none)."""
    tracing = spec.observability.tracing
    segment_files = spec.output.sinks.segment_files
    subscribers = spec.output.sinks.subscribers
    return RuntimeConfig(
        streams=tuple(
            StreamConfig(
                name=stream.name,
                partitions=stream.partitions,
                partition_key=stream.partition_key,
                retention_max_length=stream.retention.max_length,
                retention_max_age_seconds=parse_duration(stream.retention.max_age)
                if stream.retention.max_age
                else None,
            )
            for stream in spec.streams
        ),
        max_request_bytes=spec.ingest.max_request_bytes,
        max_backlog_events=spec.ingest.backpressure.max_backlog,
        retry_after_seconds=spec.ingest.backpressure.retry_after_seconds,
        pipeline=tuple(spec.workers.pipeline),
        max_deliveries=spec.workers.max_deliveries,
        dead_letter_max_length=spec.workers.dead_letters.max_length,
        dead_letter_max_age_seconds=parse_duration(spec.workers.dead_letters.max_age),
        batch_size=spec.workers.batch_size,
        segment_max_bytes=int(parse_quantity(segment_files.max_segment_bytes)),
        segment_max_age_seconds=parse_duration(segment_files.max_segment_age),
        segment_retention_max_age_seconds=parse_duration(segment_files.retention.max_age)
        if segment_files.retention.max_age
        else None,
        segment_retention_max_bytes=int(parse_quantity(segment_files.retention.max_total_bytes))
        if segment_files.retention.max_total_bytes
        else None,
        subscriber_max_buffered_entries=subscribers.max_buffered_entries,
        subscribers_enabled=subscribers.enabled,
        accept_token_in_query=spec.ingest.accept_token_in_query,
        idempotency_window_seconds=spec.ingest.idempotency_window_seconds,
        output_replicas=spec.output.replicas,
        otlp_streams=spec.ingest.otlp.streams() if spec.ingest.otlp else {},
        tracing=TracingConfig(
            endpoint=tracing.endpoint,
            sample_ratio=tracing.sample_ratio,
            hda_name=name,
            hda_namespace=namespace,
        )
        if tracing.enabled and tracing.endpoint is not None
        else None,
        topology=spec.redis.topology,
        acknowledge=spec.redis.acknowledge,
    )


def load_config_text(text: str, *, source: str) -> RuntimeConfig:
    """A whole HDA manifest (what `hda run` gets) or a bare spec (what the operator mounts)."""
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "kind" in data:
        hda = load_manifest(text, source=source)
        return from_spec(hda.spec, name=hda.name, namespace=hda.namespace)
    return from_spec(HyperDriveAcceleratorSpec.model_validate(data))


def load_config(path: str | Path) -> RuntimeConfig:
    path = Path(path)
    return load_config_text(path.read_text(), source=str(path))


def consumer_name(explicit: str | None = None) -> str:
    """The pod's identity: stable across container restarts, so a restart re-reads its own PEL."""
    return (
        explicit
        or os.environ.get(ENV_CONSUMER_NAME)
        or os.environ.get("HOSTNAME")
        or (socket.gethostname())
    )
