"""The CRD against the real kube-apiserver: examples accepted, defaults applied, bad input refused
with a message naming the field, transition rules enforced, `kubectl explain` documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.api.v1alpha1 import HyperDriveAcceleratorSpec, load_manifest
from hda.cluster.testing import ClusterHandle, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "hyperdriveaccelerators.hda.shitops.dev.yaml"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def crd_installed(cluster: ClusterHandle) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))

    def established() -> bool:
        result = cluster.kubectl(
            "get", "crd", "hyperdriveaccelerators.hda.shitops.dev",
            "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            check=False,
        )  # fmt: skip
        return result.stdout.strip() == "True"

    wait_for(established, timeout=60, message="the CRD never became Established")


def hda(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "hda.shitops.dev/v1alpha1",
            "kind": "HyperDriveAccelerator",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def one_stream(**fields: Any) -> dict[str, Any]:
    return {"streams": [{"name": "events", **fields}]}


def with_stream(**sections: Any) -> dict[str, Any]:
    return {**one_stream(), **sections}


def step(**kind: Any) -> dict[str, Any]:
    return with_stream(workers={"pipeline": [kind]})


def fc(**fibre_channel: Any) -> dict[str, Any]:
    return with_stream(output={"replicas": 1, "fibreChannel": fibre_channel})


# (case id, spec, text the apiserver's refusal must contain: the field path)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no-streams", {}, "spec.streams: Required value"),
    ("empty-streams", {"streams": []}, "spec.streams: Invalid value"),
    (
        "duplicate-stream",
        {"streams": [{"name": "a"}, {"name": "a"}]},
        "spec.streams[1]: Duplicate value",
    ),
    ("stream-name-uppercase", {"streams": [{"name": "Events"}]}, "spec.streams[0].name"),
    ("zero-partitions", one_stream(partitions=0), "spec.streams[0].partitions"),
    ("too-many-partitions", one_stream(partitions=1000), "spec.streams[0].partitions"),
    ("bad-max-age", one_stream(retention={"maxAge": "1 hour"}), "spec.streams[0].retention.maxAge"),
    ("bad-partition-key", one_stream(partitionKey="a..b"), "spec.streams[0].partitionKey"),
    ("paused-not-bool", {**one_stream(), "paused": "yes"}, "spec.paused"),
    ("empty-image", {**one_stream(), "image": ""}, "spec.image"),
    ("image-not-a-reference", {**one_stream(), "image": "Hda Runtime"}, "spec.image"),
    (
        "valkey-image-not-a-reference",
        with_stream(redis={"image": "valkey:"}),
        "spec.redis.image",
    ),
    (
        "append-fsync-no",
        with_stream(redis={"persistence": {"appendFsync": "no"}}),
        "spec.redis.persistence.appendFsync",
    ),
    (
        "storage-not-quantity",
        with_stream(redis={"storage": {"size": "ten"}}),
        "spec.redis.storage.size",
    ),
    (
        "service-type",
        with_stream(ingest={"service": {"type": "ExternalName"}}),
        "spec.ingest.service.type",
    ),
    ("service-port", with_stream(ingest={"service": {"port": 70000}}), "spec.ingest.service.port"),
    (
        "tiny-max-request",
        with_stream(ingest={"maxRequestBytes": 10}),
        "spec.ingest.maxRequestBytes",
    ),
    (
        "min-above-max",
        with_stream(workers={"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
        "spec.workers.autoscaling.minReplicas",
    ),
    ("zero-deliveries", with_stream(workers={"maxDeliveries": 0}), "spec.workers.maxDeliveries"),
    (
        "step-two-kinds",
        step(dropFields={"fields": ["a"]}, sample={"rate": 0.5}),
        "spec.workers.pipeline[0]",
    ),
    ("step-no-kind", step(name="nothing"), "spec.workers.pipeline[0]"),
    (
        "filter-bad-op",
        step(filter={"field": "a", "op": "like", "value": 1}),
        "spec.workers.pipeline[0].filter.op",
    ),
    (
        "filter-missing-value",
        step(filter={"field": "a", "op": "eq"}),
        "spec.workers.pipeline[0].filter.value",
    ),
    ("sample-rate", step(sample={"rate": 2}), "spec.workers.pipeline[0].sample.rate"),
    (
        "fc-both-modes",
        fc(volumes=[{"wwids": ["abc"], "targetWWNs": ["500a0981891b8dc5"], "lun": 1}]),
        "spec.output.fibreChannel.volumes[0]",
    ),
    (
        "fc-wwn-without-lun",
        fc(volumes=[{"targetWWNs": ["500a0981891b8dc5"]}]),
        "spec.output.fibreChannel.volumes[0].lun",
    ),
    (
        "fc-bad-wwn",
        fc(volumes=[{"targetWWNs": ["xyz"], "lun": 0}]),
        "spec.output.fibreChannel.volumes[0].targetWWNs[0]",
    ),
    (
        "fc-inventory-too-small",
        with_stream(output={"replicas": 3, "fibreChannel": {"volumes": [{"wwids": ["abc"]}]}}),
        "spec.output.fibreChannel.volumes",
    ),
    ("fc-fs-type", fc(fsType="ntfs"), "spec.output.fibreChannel.fsType"),
    (
        "pvc-retention",
        with_stream(output={"pvcRetentionPolicy": {"whenDeleted": "Keep"}}),
        "spec.output.pvcRetentionPolicy.whenDeleted",
    ),
    (
        "toleration-operator",
        with_stream(template={"workers": {"tolerations": [{"operator": "Maybe"}]}}),
        "spec.template.workers.tolerations[0].operator",
    ),
    ("unknown-field", with_stream(wokers={"replicas": 2}), 'unknown field "spec.wokers"'),
    (
        "otlp-unknown-stream",
        with_stream(ingest={"otlp": {"logs": "events", "traces": "spans"}}),
        "spec.ingest.otlp.traces: Invalid value: ingest.otlp.traces must name a stream in spec.streams",
    ),
    (
        "tracing-without-endpoint",
        with_stream(observability={"tracing": {"enabled": True}}),
        "spec.observability.tracing.endpoint: Invalid value: "
        "endpoint is required when tracing is enabled",
    ),
    (
        "tracing-full-url",
        with_stream(observability={"tracing": {"endpoint": "http://otel:4318/v1/traces"}}),
        "spec.observability.tracing.endpoint: Invalid value: "
        "endpoint is the receiver's base URL: /v1/traces is appended to it",
    ),
    (
        "tracing-not-http",
        with_stream(observability={"tracing": {"endpoint": "grpc://otel:4317"}}),
        "spec.observability.tracing.endpoint",
    ),
    (
        "tracing-ratio",
        with_stream(observability={"tracing": {"sampleRatio": 2}}),
        "spec.observability.tracing.sampleRatio",
    ),
    ("topology-unknown", with_stream(redis={"topology": "sharded"}), "spec.redis.topology"),
    (
        "standalone-replicas",
        with_stream(redis={"replicas": 1}),
        "replicas needs topology replicated or cluster: standalone is one Valkey pod",
    ),
    (
        "replicated-no-replica",
        with_stream(redis={"topology": "replicated", "replicas": 0}),
        "topology replicated needs replicas >= 1",
    ),
    (
        "shards-without-cluster",
        with_stream(redis={"topology": "replicated", "shards": 3}),
        "shards needs topology cluster",
    ),
    (
        "cluster-two-shards",
        with_stream(redis={"topology": "cluster", "shards": 2}),
        "spec.redis.shards",
    ),
    (
        "too-many-replicas",
        with_stream(redis={"topology": "cluster", "replicas": 6}),
        "spec.redis.replicas",
    ),
    (
        "acknowledge-replica-standalone",
        with_stream(redis={"acknowledge": "replica"}),
        "acknowledge replica needs a replica: set topology replicated or cluster",
    ),
    ("acknowledge-unknown", with_stream(redis={"acknowledge": "all"}), "spec.redis.acknowledge"),
]


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize(("case", "spec", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: ClusterHandle, module_namespace: str, case: str, spec: dict[str, Any], expected: str
) -> None:
    result = cluster.kubectl(
        "create", "-n", module_namespace, "-f", "-", input=hda(case, spec), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert expected in result.stderr, result.stderr
    missing = cluster.kubectl("get", "hda", case, "-n", module_namespace, check=False)
    assert missing.returncode != 0, "a refused object must not exist"


@pytest.mark.usefixtures("crd_installed")
def test_name_longer_than_40_is_refused(cluster: ClusterHandle, module_namespace: str) -> None:
    name = "n" * 41
    result = cluster.kubectl(
        "create", "-n", module_namespace, "-f", "-", input=hda(name, one_stream()), check=False
    )
    assert result.returncode != 0
    assert "metadata.name" in result.stderr
    assert "at most 40 characters" in result.stderr


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize("example", ["hda.yaml", "hda-full.yaml"])
def test_example_is_accepted_and_reads_back_unchanged(
    cluster: ClusterHandle, namespace: str, example: str
) -> None:
    text = (EXAMPLES / example).read_text()
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=text)
    local = load_manifest(text)
    stored = json.loads(
        cluster.kubectl("get", "hda", local.name, "-n", namespace, "-o", "json").stdout
    )
    # The apiserver's defaults are the models' defaults: the stored spec is the model's wire form.
    assert stored["spec"] == local.spec.to_wire()
    assert HyperDriveAcceleratorSpec.model_validate(stored["spec"]) == local.spec


@pytest.mark.usefixtures("crd_installed")
def test_defaults_appear_on_a_created_object(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda("defaults", one_stream()))
    spec = json.loads(
        cluster.kubectl("get", "hda", "defaults", "-n", namespace, "-o", "json").stdout
    )["spec"]
    assert spec["streams"][0]["partitions"] == 4
    assert "image" not in spec  # images are the operator's configuration unless pinned
    assert "image" not in spec["redis"]
    assert spec["redis"]["persistence"]["appendFsync"] == "everysec"
    assert spec["ingest"]["service"] == {"type": "ClusterIP", "port": 8080}
    assert spec["output"]["fibreChannel"]["nodeSelector"] == {
        "hda.shitops.dev/fibre-channel": "true"
    }
    assert spec["workers"]["maxDeliveries"] == 5


@pytest.mark.usefixtures("crd_installed")
def test_pinned_images_are_accepted_as_written(cluster: ClusterHandle, namespace: str) -> None:
    # The apiserver checks the model's image reference pattern with its own (RE2) engine.
    runtime = "localhost:5000/hda/runtime:1.0-rc.1@sha256:" + "0123456789abcdef" * 4
    valkey = "registry.example.com/valkey/valkey:9.1"
    pinned = with_stream(image=runtime, redis={"image": valkey})
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda("pinned", pinned))
    spec = json.loads(
        cluster.kubectl("get", "hda", "pinned", "-n", namespace, "-o", "json").stdout
    )["spec"]
    assert (spec["image"], spec["redis"]["image"]) == (runtime, valkey)


@pytest.mark.usefixtures("crd_installed")
def test_shrinking_partitions_is_refused(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=hda("shrink", one_stream(partitions=8))
    )
    result = cluster.kubectl(
        "patch", "hda", "shrink", "-n", namespace, "--type=json",
        "-p", '[{"op": "replace", "path": "/spec/streams/0/partitions", "value": 4}]',
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "spec.streams[0].partitions" in result.stderr
    assert "cannot be reduced" in result.stderr
    grown = cluster.kubectl(
        "patch", "hda", "shrink", "-n", namespace, "--type=json",
        "-p", '[{"op": "replace", "path": "/spec/streams/0/partitions", "value": 16}]',
    )  # fmt: skip
    assert grown.returncode == 0


IMMUTABLE: list[tuple[str, dict[str, Any], str]] = [
    (
        "redis-class",
        {"redis": {"storage": {"storageClassName": "slow"}}},
        "spec.redis.storage.storageClassName",
    ),
    (
        "redis-class-unset",
        {"redis": {"storage": {"storageClassName": None}}},
        "spec.redis.storage.storageClassName",
    ),
    ("redis-size", {"redis": {"storage": {"size": "20Gi"}}}, "spec.redis.storage.size"),
    (
        "fc-class",
        {"output": {"fibreChannel": {"storageClassName": "other"}}},
        "spec.output.fibreChannel.storageClassName",
    ),
    ("fc-size", {"output": {"fibreChannel": {"size": "200Gi"}}}, "spec.output.fibreChannel.size"),
    (
        "fc-fs-type",
        {"output": {"fibreChannel": {"fsType": "xfs"}}},
        "spec.output.fibreChannel.fsType",
    ),
]


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize(("case", "patch", "expected"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_storage_fields_are_immutable(
    cluster: ClusterHandle, namespace: str, case: str, patch: dict[str, Any], expected: str
) -> None:
    spec = with_stream(redis={"storage": {"storageClassName": "fast"}})
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda(case, spec))
    result = cluster.kubectl(
        "patch", "hda", case, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": patch}),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"{case} was accepted"
    assert expected in result.stderr, result.stderr
    assert "immutable" in result.stderr


TOPOLOGY_CHANGES: list[tuple[str, dict[str, Any], str]] = [
    ("standalone-to-replicated", {}, "replicated"),
    ("replicated-to-cluster", {"topology": "replicated"}, "cluster"),
    ("cluster-to-standalone", {"topology": "cluster"}, "standalone"),
]


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize(
    ("case", "redis", "new"), TOPOLOGY_CHANGES, ids=[c[0] for c in TOPOLOGY_CHANGES]
)
def test_changing_the_topology_is_refused(
    cluster: ClusterHandle, namespace: str, case: str, redis: dict[str, Any], new: str
) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda(case, with_stream(redis=redis)))
    result = cluster.kubectl(
        "patch", "hda", case, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"redis": {"topology": new}}}),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"{case} was accepted"
    assert "spec.redis.topology" in result.stderr, result.stderr
    assert "topology is immutable: create a new HDA with the other topology" in result.stderr


@pytest.mark.usefixtures("crd_installed")
def test_shards_and_replicas_of_a_cluster_can_change(
    cluster: ClusterHandle, namespace: str
) -> None:
    spec = with_stream(redis={"topology": "cluster", "shards": 3, "replicas": 1})
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda("grow", spec))
    result = cluster.kubectl(
        "patch", "hda", "grow", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"redis": {"shards": 4, "replicas": 2}}}),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize("shards", [3, None], ids=["fewer", "unset"])
def test_removing_shards_down_to_three_is_accepted(
    cluster: ClusterHandle, namespace: str, shards: int | None
) -> None:
    spec = with_stream(redis={"topology": "cluster", "shards": 4})
    name = f"shrink-{shards}".lower()
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda(name, spec))
    result = cluster.kubectl(
        "patch", "hda", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"redis": {"shards": shards}}}),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("crd_installed")
def test_fewer_than_three_shards_is_refused_on_update(
    cluster: ClusterHandle, namespace: str
) -> None:
    spec = with_stream(redis={"topology": "cluster", "shards": 4})
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda("shrink-two", spec))
    result = cluster.kubectl(
        "patch", "hda", "shrink-two", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"redis": {"shards": 2}}}),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0, "2 shards were accepted"
    assert "spec.redis.shards" in result.stderr, result.stderr


@pytest.mark.usefixtures("crd_installed")
def test_kubectl_explain_shows_the_descriptions(cluster: ClusterHandle) -> None:
    def explained() -> str | None:
        result = cluster.kubectl(
            "explain", "hyperdriveaccelerator.spec.workers.autoscaling", check=False
        )
        return result.stdout if result.returncode == 0 else None

    # The OpenAPI view of a new CRD is published a moment after it is Established.
    text = wait_for(explained, timeout=60, message="kubectl explain never found the CRD")
    assert "Lag-driven scaling; when set, it decides the replica count." in text
    assert "minReplicas" in text
    assert "Fewest workers." in text
    assert "targetLagPerReplica" in text


@pytest.mark.usefixtures("crd_installed")
def test_scale_subresource_sets_worker_replicas(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=hda("scaled", one_stream()))
    cluster.kubectl("scale", "hda/scaled", "-n", namespace, "--replicas=5")
    stored = yaml.safe_load(
        cluster.kubectl("get", "hda", "scaled", "-n", namespace, "-o", "yaml").stdout
    )
    assert stored["spec"]["workers"]["replicas"] == 5
