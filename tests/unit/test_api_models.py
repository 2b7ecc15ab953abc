"""Model-level validation: what the pydantic models enforce, with messages that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hda.api.v1alpha1 import (
    HyperDriveAcceleratorSpec,
    ManifestError,
    load_manifest,
    parse_duration,
    parse_quantity,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL = """\
apiVersion: hda.shitops.dev/v1alpha1
kind: HyperDriveAccelerator
metadata:
  name: logs
spec:
  streams:
    - name: events
"""


def manifest_with(extra_spec: str) -> str:
    """The minimal manifest with `extra_spec` (YAML at spec level, two-space indented) appended."""
    return MINIMAL + extra_spec


def rejection(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(text, source="hda.yaml")
    return str(caught.value)


@pytest.mark.parametrize("name", ["hda.yaml", "hda-full.yaml"])
def test_examples_load_and_round_trip(name: str) -> None:
    hda = load_manifest((EXAMPLES / name).read_text())
    again = HyperDriveAcceleratorSpec.model_validate(hda.spec.to_wire())
    assert again == hda.spec


def test_defaults_are_filled_in() -> None:
    spec = load_manifest(MINIMAL).spec
    assert spec.streams[0].partitions == 4
    assert spec.image is None  # images are the operator's configuration unless pinned
    assert spec.redis.image is None
    assert spec.redis.persistence.append_fsync == "everysec"
    assert spec.output.fibre_channel.node_selector == {"hda.shitops.dev/fibre-channel": "true"}
    assert spec.workers.max_deliveries == 5


def test_invalid_regex_in_redact_names_the_field_and_line() -> None:
    message = rejection(
        manifest_with(
            "  workers:\n    pipeline:\n      - redact: {fields: [msg], pattern: '([unclosed'}\n"
        )
    )
    assert "line 10" in message
    assert "spec.workers.pipeline[0].redact.pattern" in message
    assert "invalid regular expression" in message


def test_invalid_regex_in_filter_matches_is_rejected() -> None:
    message = rejection(
        manifest_with(
            "  workers:\n    pipeline:\n      - filter: {field: msg, op: matches, value: '*bad'}\n"
        )
    )
    assert "spec.workers.pipeline[0].filter" in message
    assert "invalid regular expression" in message


def test_duplicate_stream_names_are_rejected() -> None:
    message = rejection(MINIMAL + "    - name: events\n")
    assert "spec.streams" in message
    assert "duplicate stream name 'events'" in message


def test_step_with_two_kinds_is_rejected() -> None:
    message = rejection(
        manifest_with(
            "  workers:\n    pipeline:\n"
            "      - dropFields: {fields: [a]}\n        sample: {rate: 0.5}\n"
        )
    )
    assert "spec.workers.pipeline[0]" in message
    assert "exactly one of" in message


def test_min_replicas_above_max_is_rejected() -> None:
    message = rejection(
        manifest_with("  workers:\n    autoscaling: {minReplicas: 5, maxReplicas: 2}\n")
    )
    assert "spec.workers.autoscaling" in message
    assert "minReplicas must be less than or equal to maxReplicas" in message


def test_fc_volume_with_both_addressing_modes_is_rejected() -> None:
    message = rejection(
        manifest_with(
            "  output:\n    replicas: 1\n    fibreChannel:\n      volumes:\n"
            "        - {wwids: [abc], targetWWNs: ['500a0981891b8dc5'], lun: 1}\n"
        )
    )
    assert "spec.output.fibreChannel.volumes[0]" in message
    assert "not both" in message


def test_inventory_smaller_than_replicas_is_rejected() -> None:
    message = rejection(
        manifest_with(
            "  output:\n    replicas: 3\n    fibreChannel:\n      volumes:\n        - {wwids: [abc]}\n"
        )
    )
    assert "spec.output" in message
    assert "1 LUNs for 3 replicas" in message


def test_unknown_field_is_named() -> None:
    message = rejection(manifest_with("  wokers: {replicas: 2}\n"))
    assert "line 8" in message
    assert "spec.wokers" in message


def test_bad_quantity_is_named() -> None:
    message = rejection(manifest_with("  redis:\n    storage: {size: ten-gigs}\n"))
    assert "spec.redis.storage.size" in message
    assert "not a Kubernetes quantity" in message


def test_missing_streams_is_named() -> None:
    message = rejection(MINIMAL.replace("  streams:\n    - name: events\n", "  paused: true\n"))
    assert "spec.streams" in message
    assert "Field required" in message


def test_not_yaml_is_reported() -> None:
    assert "not valid YAML" in rejection("spec: [unclosed")


def test_wrong_kind_is_reported() -> None:
    assert "expected exactly one HyperDriveAccelerator" in rejection("kind: Deployment\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "value"), [("10Gi", 10 * 2**30), ("500m", 0.5), ("2", 2), ("1k", 1000), ("2e3", 2000)]
)
def test_parse_quantity(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


def test_topology_defaults_fill_replicas_and_shards() -> None:
    redis = load_manifest(manifest_with("  redis: {topology: cluster}\n")).spec.redis
    assert (redis.topology, redis.shard_count, redis.replica_count) == ("cluster", 3, 1)
    assert redis.acknowledge == "primary"


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        ("{replicas: 2}", "replicas needs topology replicated or cluster"),
        ("{topology: replicated, replicas: 0}", "topology replicated needs replicas >= 1"),
        ("{topology: replicated, shards: 3}", "shards needs topology cluster"),
        ("{acknowledge: replica}", "acknowledge replica needs a replica"),
        ("{topology: cluster, shards: 2}", "spec.redis.shards"),
        ("{topology: ring}", "spec.redis.topology"),
    ],
)
def test_inconsistent_topology_is_rejected(redis: str, expected: str) -> None:
    assert expected in rejection(manifest_with(f"  redis: {redis}\n"))


def test_tracing_defaults_to_off_at_one_percent() -> None:
    tracing = load_manifest(MINIMAL).spec.observability.tracing
    assert (tracing.enabled, tracing.endpoint, tracing.sample_ratio) == (False, None, 0.01)


@pytest.mark.parametrize(
    ("tracing", "expected"),
    [
        ("{enabled: true}", "endpoint is required when tracing is enabled"),
        ("{endpoint: 'otel:4318'}", "spec.observability.tracing.endpoint"),
        ("{endpoint: 'http://otel:4318/?x=1'}", "spec.observability.tracing.endpoint"),
        (
            "{endpoint: 'http://otel:4318/v1/traces'}",
            "endpoint is the receiver's base URL: /v1/traces is appended to it",
        ),
        ("{sampleRatio: 1.5}", "spec.observability.tracing.sampleRatio"),
        ("{sampleRatio: -0.1}", "spec.observability.tracing.sampleRatio"),
        ("{exporter: zipkin}", "spec.observability.tracing.exporter"),
    ],
)
def test_bad_tracing_settings_are_rejected_naming_the_field(tracing: str, expected: str) -> None:
    message = rejection(manifest_with(f"  observability:\n    tracing: {tracing}\n"))
    assert expected in message
