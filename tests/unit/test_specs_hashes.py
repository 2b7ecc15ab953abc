"""Config-hash annotations roll exactly the pods a spec change affects; output is deterministic."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_specs_support import EXAMPLE_FILES, children, edited, example, pod_hashes

from hda.specs import config_hash

WORKLOADS = {"logs-valkey", "logs-ingest", "logs-workers", "logs-output"}


def changed_workloads(edit: Any, file_name: str = "hda.yaml") -> set[str]:
    """Names of the workloads whose pod hash differs after `edit`."""
    before = example(file_name)
    after = edited(before, edit)
    old, new = pod_hashes(before), pod_hashes(after)
    return {workload.split("/", 1)[1] for workload in old if old[workload] != new[workload]}


def test_every_workload_has_a_hash() -> None:
    assert {workload.split("/", 1)[1] for workload in pod_hashes(example())} == WORKLOADS


def test_pipeline_change_rolls_only_the_workers() -> None:
    def add_step(wire: dict[str, Any]) -> None:
        wire["spec"]["workers"]["pipeline"] = [{"dropFields": {"fields": ["debug"]}}]

    assert changed_workloads(add_step) == {"logs-workers"}


def test_ingest_replicas_change_no_hash() -> None:
    def scale(wire: dict[str, Any]) -> None:
        wire["spec"]["ingest"]["replicas"] = 7

    assert changed_workloads(scale) == set()


def test_ingest_backpressure_rolls_only_ingest() -> None:
    def watermark(wire: dict[str, Any]) -> None:
        wire["spec"]["ingest"]["backpressure"] = {"maxBacklog": 5}

    assert changed_workloads(watermark) == {"logs-ingest"}


def test_output_sinks_roll_only_output() -> None:
    def subscribers_off(wire: dict[str, Any]) -> None:
        wire["spec"]["output"]["sinks"] = {"subscribers": {"enabled": False}}

    assert changed_workloads(subscribers_off) == {"logs-output"}


def test_append_fsync_rolls_only_valkey() -> None:
    def always(wire: dict[str, Any]) -> None:
        wire["spec"]["redis"]["persistence"] = {"appendFsync": "always"}

    assert changed_workloads(always) == {"logs-valkey"}


def test_new_stream_rolls_the_runtime_but_not_valkey() -> None:
    def add_stream(wire: dict[str, Any]) -> None:
        wire["spec"]["streams"].append({"name": "metrics"})

    assert changed_workloads(add_stream) == {"logs-ingest", "logs-workers", "logs-output"}


@settings(max_examples=25, deadline=None)
@given(
    ingest=st.integers(0, 100),
    workers=st.integers(0, 1000),
    output=st.integers(0, 64),
    worker_replicas=st.integers(0, 1000),
)
def test_no_replica_count_is_part_of_any_hash(
    ingest: int, workers: int, output: int, worker_replicas: int
) -> None:
    def scale(wire: dict[str, Any]) -> None:
        wire["spec"]["ingest"]["replicas"] = ingest
        wire["spec"]["workers"]["replicas"] = workers
        wire["spec"]["output"]["replicas"] = output

    base = example()
    scaled = edited(base, scale)
    before = [obj for obj in children(base) if "template" in obj.get("spec", {})]
    after = [
        obj
        for obj in children(scaled, worker_replicas=worker_replicas)
        if "template" in obj.get("spec", {})
    ]

    assert [obj["spec"]["template"] for obj in before] == [obj["spec"]["template"] for obj in after]


def test_same_input_gives_identical_children() -> None:
    for file_name in EXAMPLE_FILES:
        assert children(example(file_name)) == children(example(file_name))


def test_children_do_not_share_mutable_parts_between_calls() -> None:
    first = children(example("hda-full.yaml"))
    first[0]["metadata"]["labels"]["mutated"] = "yes"

    assert "mutated" not in children(example("hda-full.yaml"))[0]["metadata"]["labels"]


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_config_hash_ignores_key_order(value: dict[str, int]) -> None:
    reordered = dict(reversed(list(value.items())))

    assert config_hash(value) == config_hash(reordered)


def test_enabling_tracing_rolls_the_runtime_but_not_valkey() -> None:
    def trace(wire: dict[str, Any]) -> None:
        wire["spec"]["observability"] = {
            "tracing": {"enabled": True, "endpoint": "http://otel.monitoring:4318"}
        }

    assert changed_workloads(trace) == {"logs-ingest", "logs-workers", "logs-output"}


def test_a_disabled_tracing_section_rolls_nothing() -> None:
    def configure_but_keep_off(wire: dict[str, Any]) -> None:
        wire["spec"]["observability"] = {
            "tracing": {"endpoint": "http://otel.monitoring:4318", "sampleRatio": 0.5}
        }

    assert changed_workloads(configure_but_keep_off) == set()
