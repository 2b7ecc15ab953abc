"""`hda bench`'s pure parts: the manifest it measures and the events it sends."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from hda.api.v1alpha1 import load_manifest
from hda.runtime.bench import HOSTS, BenchOptions, bench_manifest, sample_event
from hda.runtime.cli import bench


def test_partition_key_makes_the_bench_stream_route_by_host() -> None:
    routed = load_manifest(bench_manifest(BenchOptions(partition_key=True)))
    plain = load_manifest(bench_manifest(BenchOptions()))
    assert routed.spec.streams[0].partition_key == "host"
    assert plain.spec.streams[0].partition_key is None


def test_a_request_of_sample_events_spreads_over_every_host_at_one_size() -> None:
    events = [sample_event(sequence, 200) for sequence in range(200)]
    assert len({orjson.loads(event)["host"] for event in events}) == HOSTS
    assert {len(event) for event in events} == {200}


def test_partition_key_with_otlp_is_refused_naming_both_flags() -> None:
    result = CliRunner().invoke(bench, ["--partition-key", "--otlp"])
    assert result.exit_code == 2
    assert "--partition-key" in result.output
    assert "--otlp" in result.output
