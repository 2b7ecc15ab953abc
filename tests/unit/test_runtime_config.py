"""The adapter from the API model to the runtime configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hda.runtime.config import TracingConfig, load_config_text


def test_manifest_and_bare_spec_give_the_same_runtime_config() -> None:
    spec = """
streams:
  - {name: events, partitions: 3, partitionKey: host, retention: {maxLength: 100, maxAge: 1h}}
ingest: {maxRequestBytes: 2048, backpressure: {maxBacklog: 10, retryAfterSeconds: 3}}
workers:
  maxDeliveries: 2
  pipeline:
    - filter: {field: level, op: eq, value: error}
output:
  sinks:
    segmentFiles: {maxSegmentBytes: 1Mi, maxSegmentAge: 30s}
    subscribers: {maxBufferedEntries: 7}
"""
    manifest = (
        "apiVersion: hda.shitops.dev/v1alpha1\nkind: HyperDriveAccelerator\nmetadata: {name: x}\nspec:\n"
        + "\n".join("  " + line for line in spec.strip().splitlines())
    )
    from_manifest = load_config_text(manifest, source="m.yaml")
    from_spec = load_config_text(spec, source="spec.yaml")
    assert from_manifest == from_spec
    config = from_spec
    stream = config.stream("events")
    assert stream is not None
    assert (stream.partitions, stream.partition_key) == (3, "host")
    assert (stream.retention_max_length, stream.retention_max_age_seconds) == (100, 3600.0)
    assert (config.max_request_bytes, config.max_backlog_events, config.retry_after_seconds) == (
        2048,
        10,
        3,
    )
    assert config.max_deliveries == 2
    assert len(config.pipeline) == 1
    assert (config.segment_max_bytes, config.segment_max_age_seconds) == (1 << 20, 30.0)
    assert config.subscriber_max_buffered_entries == 7
    assert config.stream("other") is None


def test_dead_letter_retention_defaults_to_ten_thousand_entries_and_a_week() -> None:
    config = load_config_text("streams: [{name: events}]", source="spec.yaml")
    assert (config.dead_letter_max_length, config.dead_letter_max_age_seconds) == (
        10_000,
        7 * 24 * 3600.0,
    )


def test_dead_letter_retention_comes_from_spec_workers() -> None:
    config = load_config_text(
        "streams: [{name: events}]\nworkers: {deadLetters: {maxLength: 50, maxAge: 2h}}",
        source="spec.yaml",
    )
    assert (config.dead_letter_max_length, config.dead_letter_max_age_seconds) == (50, 7200.0)


def test_dead_letter_max_length_below_one_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"deadLetters\.maxLength"):
        load_config_text(
            "streams: [{name: events}]\nworkers: {deadLetters: {maxLength: 0}}", source="s.yaml"
        )


def test_segment_retention_defaults_to_a_week_and_a_share_of_the_volume() -> None:
    config = load_config_text("streams: [{name: events}]", source="spec.yaml")
    assert config.segment_retention_max_age_seconds == 7 * 24 * 3600.0
    assert config.segment_retention_max_bytes is None


def test_segment_retention_comes_from_spec_output() -> None:
    config = load_config_text(
        "streams: [{name: events}]\n"
        "output: {sinks: {segmentFiles: {retention: {maxAge: 1h, maxTotalBytes: 2Gi}}}}",
        source="spec.yaml",
    )
    assert config.segment_retention_max_age_seconds == 3600.0
    assert config.segment_retention_max_bytes == 2 * 1024**3


TRACED = (
    "apiVersion: hda.shitops.dev/v1alpha1\nkind: HyperDriveAccelerator\n"
    "metadata: {name: shop, namespace: team-a}\nspec:\n  streams: [{name: events}]\n"
    "  observability:\n    tracing: {enabled: true, endpoint: 'http://otel:4318', sampleRatio: 0.25}\n"
)


def test_tracing_is_off_by_default() -> None:
    assert load_config_text("streams: [{name: events}]", source="spec.yaml").tracing is None


def test_disabled_tracing_with_an_endpoint_is_still_off() -> None:
    spec = "streams: [{name: events}]\nobservability: {tracing: {endpoint: 'http://otel:4318'}}"
    assert load_config_text(spec, source="spec.yaml").tracing is None


def test_tracing_config_carries_endpoint_ratio_and_the_hda_identity() -> None:
    tracing = load_config_text(TRACED, source="hda.yaml").tracing
    assert tracing == TracingConfig(
        endpoint="http://otel:4318", sample_ratio=0.25, hda_name="shop", hda_namespace="team-a"
    )


def test_topology_and_acknowledge_come_from_spec_redis() -> None:
    config = load_config_text(
        "streams: [{name: events}]\nredis: {topology: cluster, acknowledge: replica}\n",
        source="spec.yaml",
    )

    assert (config.topology, config.acknowledge) == ("cluster", "replica")
