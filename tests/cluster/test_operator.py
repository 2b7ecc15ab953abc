"""The operator, running for real (`hda operator` with only the chart's RBAC), against the local
control plane: kwok nodes with and without Fibre Channel, namespaces enforcing the restricted Pod
Security Standard, static FC volumes from the LUN inventory.

Waits poll with generous timeouts; nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitoring_support import (
    compare_with_docs,
    documented_metrics,
    label_selector,
    scraped_families,
)

from hda.api.consts import FIELD_MANAGER, LABEL_ACCELERATOR, LABEL_COMPONENT
from hda.api.images import ENV_DEFAULT_VALKEY_IMAGE, DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.cluster.testing import ClusterHandle, wait_for
from hda.controller.scaling import SCALING_ANNOTATION
from hda.runtime.codec import input_key
from hda.runtime.config import WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey
from hda.specs import (
    SECRETS_HASH_ANNOTATION,
    ChildNames,
    child_names,
    desired_children,
    resolve_images,
)
from hda.testing.harness import OperatorProcess, Request, describe
from hda.testing.pytest_fixtures import (
    HDA_RESOURCE,
    LOCAL_CLASS,
    RESYNC_SECONDS,
    HdaFactory,
    RunningOperator,
    condition,
    default_images_env,
    dump,
    get_json,
)

pytest_plugins = ["hda.testing.pytest_fixtures"]
pytestmark = pytest.mark.cluster

READY_TIMEOUT = 180.0
CHART = Path(__file__).resolve().parents[2] / "charts" / "hda-operator"
FC_LABEL = "hda.shitops.dev/fibre-channel"


def hda_obj(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, HDA_RESOURCE, name, "-n", namespace)


def wait_condition(  # noqa: PLR0917
    cluster: ClusterHandle,
    operator: RunningOperator,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    reason: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        operator.process.healthy()
        obj = hda_obj(cluster, namespace, name)
        found = condition(obj, kind)
        if found.get("status") != status or (reason is not None and found.get("reason") != reason):
            return None
        if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    return wait_for(
        probe,
        timeout=timeout,
        interval=0.5,
        message=lambda: (
            f"{kind} never became {status}/{reason}:\n"
            f"{dump(hda_obj(cluster, namespace, name).get('status'))}\n"
            f"operator log tail:\n{operator.process.output()[-3000:]}"
        ),
    )


def model(obj: dict[str, Any]) -> HyperDriveAccelerator:
    return HyperDriveAccelerator.model_validate(
        {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )


def ready_hda(
    cluster: ClusterHandle,
    operator: RunningOperator,
    hdas: HdaFactory,
    namespace: str,
    **kwargs: Any,
) -> dict[str, Any]:
    name = f"p{uuid.uuid4().hex[:5]}"
    hdas.create(hdas.manifest(name, namespace, **kwargs))
    return wait_condition(cluster, operator, namespace, name, "Ready", "True")


def in_namespace(namespace: str, pv_prefix: str | None = None) -> Any:
    def touching(request: Request) -> bool:
        if f"/namespaces/{namespace}/" in request.path:
            return True
        return pv_prefix is not None and f"/persistentvolumes/{pv_prefix}" in request.path

    return touching


# --- create -----------------------------------------------------------------------------------


def test_create_gives_every_child_ready_status_and_fc_placement(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    hda = model(obj)
    names = child_names(hda)
    uid = obj["metadata"]["uid"]

    # Every desired child exists, carries the owner reference (namespaced) or the HDA's labels
    # (cluster-scoped FC volumes), and is managed by the operator's field manager.
    images = resolve_images(hda.spec, running_operator.default_images)
    desired = desired_children(hda, images, worker_replicas=hda.spec.workers.replicas)
    for child in desired:
        kind, child_name = child["kind"], child["metadata"]["name"]
        args = [kind.lower(), child_name] + (["-n", ns] if kind != "PersistentVolume" else [])
        live = get_json(cluster, *args, "--show-managed-fields")
        assert live, f"{kind}/{child_name} does not exist"
        managers = {m["manager"] for m in live["metadata"].get("managedFields", [])}
        assert FIELD_MANAGER in managers, f"{kind}/{child_name} managers: {managers}"
        if kind == "PersistentVolume":
            assert live["metadata"]["labels"]["hda.shitops.dev/namespace"] == ns
        else:
            owners = live["metadata"].get("ownerReferences") or []
            assert any(o["uid"] == uid and o.get("controller") for o in owners), kind
    secret = get_json(cluster, "secret", names.buffer_password_secret, "-n", ns)
    assert secret["data"]["password"], "the generated Valkey password Secret exists"

    # Output pods run only on Fibre Channel nodes, on Bound claims backed by the LUN volumes.
    nodes = get_json(cluster, "nodes")["items"]
    fc_nodes = {
        n["metadata"]["name"] for n in nodes if n["metadata"]["labels"].get(FC_LABEL) == "true"
    }
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"{LABEL_COMPONENT}=output")["items"]
    assert len(pods) == hda.spec.output.replicas
    for pod in pods:
        assert pod["spec"]["nodeName"] in fc_nodes, pod["spec"].get("nodeName")
        assert pod["status"]["phase"] == "Running"
    for ordinal in range(hda.spec.output.replicas):
        claim = get_json(cluster, "pvc", names.output_claim(ordinal), "-n", ns)
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["volumeName"] in names.fc_volumes

    # Every pod of the pipeline was admitted under restricted Pod Security.
    all_pods = get_json(cluster, "pods", "-n", ns, "-l", f"{LABEL_ACCELERATOR}={hda.name}")["items"]
    assert len(all_pods) == 1 + 1 + 2 + 2  # valkey, ingest, workers, output
    labels = get_json(cluster, "namespace", ns)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["workersReady"] == "2/2"
    assert status["components"]["workers"]["replicas"] == 2
    assert f"{LABEL_ACCELERATOR}={hda.name}" in status["components"]["workers"]["selector"]
    for kind in ("Ready", "BufferReady", "IngestReady", "WorkersReady", "OutputReady"):
        assert condition(obj, kind)["status"] == "True", kind
    assert condition(obj, "OutputStorageBound")["reason"] == "ClaimsBound"
    assert condition(obj, "Degraded")["status"] == "False"
    assert condition(obj, "Progressing")["status"] == "False"
    # Valkey is simulated by kwok, so lag is honestly unknown and never blocks readiness.
    assert condition(obj, "WorkersKeepingUp")["status"] == "Unknown"

    events = get_json(
        cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={hda.name}"
    )["items"]
    reasons = {e["reason"] for e in events}
    assert {"Applied", "AllComponentsReady"} <= reasons, reasons


def test_status_subscribe_url_is_the_cluster_ip_service_over_every_output_pod(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    names = child_names(model(obj))

    assert obj["status"]["endpoints"]["subscribe"] == f"ws://{names.output_service}.{ns}.svc:8081"
    service = get_json(cluster, "service", names.output_service, "-n", ns)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["clusterIP"] not in ("", "None")  # one address, not per-pod DNS
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    selected = get_json(cluster, "pods", "-n", ns, "-l", selector)["items"]
    assert sorted(p["metadata"]["name"] for p in selected) == [
        f"{names.output_statefulset}-{i}" for i in range(2)
    ]


# --- no FC nodes, then one is added ------------------------------------------------------------


def test_no_fibre_channel_nodes_then_recovers_when_one_is_added(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    if not cluster.is_local:
        pytest.skip("adding nodes needs the local control plane")
    ns = restricted_namespace
    zone = f"zone-{uuid.uuid4().hex[:6]}"
    selector = {"hda.shitops.dev/fc-zone": zone}  # no node carries it yet
    name = "nofc"
    hdas.create(hdas.manifest(name, ns, node_selector=selector, replicas=1, luns=1))
    obj = wait_condition(
        cluster, running_operator, ns, name, "Ready", "False", "NoFibreChannelNodes"
    )
    assert condition(obj, "Degraded")["reason"] == "NoFibreChannelNodes"
    assert condition(obj, "OutputReady")["reason"] == "NoFibreChannelNodes"
    assert "hda.shitops.dev/fc-zone=" + zone in condition(obj, "OutputReady")["message"]
    # Everything else comes up; only output waits for a Fibre Channel node.
    obj = wait_condition(cluster, running_operator, ns, name, "WorkersReady", "True")
    obj = wait_condition(cluster, running_operator, ns, name, "BufferReady", "True")
    assert condition(obj, "Ready")["reason"] == "NoFibreChannelNodes"
    pending = get_json(cluster, "pods", "-n", ns, "-l", f"{LABEL_COMPONENT}=output")["items"]
    assert [p["status"]["phase"] for p in pending] == ["Pending"]
    events = get_json(
        cluster, "events", "-n", ns, "--field-selector", "reason=NoFibreChannelNodes"
    )["items"]
    assert any(e["type"] == "Warning" for e in events)

    node = f"fc-{zone}"
    cluster.add_node(node, fc=True)
    try:
        cluster.kubectl("label", "node", node, f"hda.shitops.dev/fc-zone={zone}")
        obj = wait_condition(cluster, running_operator, ns, name, "Ready", "True")
        assert condition(obj, "Degraded")["status"] == "False"
        pods = get_json(cluster, "pods", "-n", ns, "-l", f"{LABEL_COMPONENT}=output")["items"]
        assert [p["spec"]["nodeName"] for p in pods] == [node]
    finally:
        hdas.cleanup()
        cluster.delete_node(node)


# --- status tells the truth ---------------------------------------------------------------------


def test_unschedulable_workers_make_degraded_with_the_schedulers_reason(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = "toobig"
    too_big = {"requests": {"cpu": "64"}, "limits": {"cpu": "64"}}  # kwok nodes have 16
    hdas.create(
        hdas.manifest(
            name,
            ns,
            replicas=1,
            luns=1,
            extra_spec={"workers": {"replicas": 1, "resources": too_big}},
        )
    )
    obj = wait_condition(cluster, running_operator, ns, name, "Degraded", "True", "Unschedulable")
    message = condition(obj, "Degraded")["message"]
    assert "cannot be scheduled" in message
    assert "Insufficient cpu" in message
    # No worker pod is ready: Ready is False for the same reason.
    assert condition(obj, "WorkersReady")["reason"] == "Unschedulable"
    assert condition(obj, "Ready")["status"] == "False"


def test_valkey_claim_with_a_missing_storage_class_is_named(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = "noclass"
    redis = {"storage": {"size": "1Gi", "storageClassName": "no-such-class"}}
    manifest = hdas.manifest(name, ns, replicas=1, luns=1, extra_spec={"redis": redis})
    # Not hdas.create: its pre-bound volume would bind the claim whatever its class.
    hdas.namespaces.add(ns)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    obj = wait_condition(
        cluster, running_operator, ns, name, "Degraded", "True", "StorageClassMissing"
    )
    names = child_names(model(obj))
    message = condition(obj, "Degraded")["message"]
    assert f"data-{names.valkey_statefulset}-0" in message
    assert "StorageClass no-such-class" in message
    assert condition(obj, "BufferReady")["reason"] == "StorageClassMissing"


def test_unreachable_api_is_reported_in_status_and_cleared_on_the_next_pass(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns, replicas=1, luns=1)
    name = obj["metadata"]["name"]
    names = child_names(model(obj))

    def child_write(request: Request) -> bool:
        return (
            request.write
            and f"/namespaces/{ns}/" in request.path
            and not request.path.endswith("/status")
            and "/events" not in request.path
        )

    running_operator.proxy.drop(child_write)
    try:
        cluster.kubectl("delete", "configmap", names.runtime_configmap, "-n", ns)
        obj = wait_condition(cluster, running_operator, ns, name, "Degraded", "True", "ApplyFailed")
        message = condition(obj, "Degraded")["message"]
        assert f"ConfigMap/{names.runtime_configmap}" in message
        assert "not reachable" in message
    finally:
        running_operator.proxy.drop(None)
    wait_condition(cluster, running_operator, ns, name, "Degraded", "False")
    cluster.kubectl("get", "configmap", names.runtime_configmap, "-n", ns)


def test_pods_are_watched_only_through_the_hda_label_selector(
    running_operator: RunningOperator,
) -> None:
    pod_requests = [
        r
        for r in running_operator.proxy.snapshot()
        if r.path.endswith("/pods") or "/pods/" in r.path
    ]
    assert pod_requests, "the operator never listed or watched pods"
    unselected = [r for r in pod_requests if "labelSelector=" not in r.query]
    assert unselected == [], describe(unselected)
    assert all(r.method == "GET" and r.path.endswith("/pods") for r in pod_requests), describe(
        pod_requests
    )


# --- drift ------------------------------------------------------------------------------------


def test_deleted_or_hand_edited_children_are_restored(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    names = child_names(model(obj))

    workers = get_json(cluster, "deployment", names.workers_deployment, "-n", ns)
    cluster.kubectl("delete", "deployment", names.workers_deployment, "-n", ns, "--wait=false")
    wait_for(
        lambda: (
            get_json(cluster, "deployment", names.workers_deployment, "-n", ns)
            .get("metadata", {})
            .get("uid")
            not in (None, workers["metadata"]["uid"])
        ),
        timeout=60,
        message="the worker Deployment was not recreated",
    )

    image = running_operator.default_images.valkey
    cluster.kubectl(
        "set", "image", "statefulset", names.valkey_statefulset, "valkey=valkey/valkey:6", "-n", ns
    )

    def valkey_image() -> str:
        sts = get_json(cluster, "statefulset", names.valkey_statefulset, "-n", ns)
        return str(sts["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_for(
        lambda: valkey_image() == image, timeout=60, message="the Valkey image was not reverted"
    )
    wait_condition(cluster, running_operator, ns, obj["metadata"]["name"], "Ready", "True")


def _leftovers(name: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One object of each namespaced kind the operator applies, under a name no spec asks for,
    with `meta` (an HDA child's labels and owner reference): what an older operator version
    that named its children differently would have left."""
    pod = {
        "metadata": {"labels": {"leftover": name}},
        "spec": {"containers": [{"name": "c", "image": "registry.test/leftover:1"}]},
    }
    selector = {"matchLabels": {"leftover": name}}
    specs: dict[tuple[str, str], dict[str, Any]] = {
        ("v1", "ServiceAccount"): {},
        ("v1", "ConfigMap"): {"data": {"old": "yes"}},
        ("v1", "Service"): {"spec": {"ports": [{"port": 80}], "selector": {"leftover": name}}},
        ("networking.k8s.io/v1", "NetworkPolicy"): {
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"]}
        },
        ("policy/v1", "PodDisruptionBudget"): {"spec": {"selector": selector, "maxUnavailable": 1}},
        ("apps/v1", "Deployment"): {"spec": {"replicas": 0, "selector": selector, "template": pod}},
        ("apps/v1", "StatefulSet"): {
            "spec": {"replicas": 0, "serviceName": name, "selector": selector, "template": pod}
        },
    }
    return [
        {"apiVersion": api_version, "kind": kind, "metadata": {**meta, "name": name}, **spec}
        for (api_version, kind), spec in specs.items()
    ]


def test_children_the_spec_no_longer_asks_for_are_deleted(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    namespace: str,
) -> None:
    obj = ready_hda(cluster, running_operator, hdas, namespace)
    names = child_names(model(obj))
    child = get_json(cluster, "configmap", names.runtime_configmap, "-n", namespace)["metadata"]
    meta = {
        "namespace": namespace,
        "labels": child["labels"],
        "ownerReferences": child["ownerReferences"],
    }
    leftovers = _leftovers(f"{obj['metadata']['name']}-retired", meta)
    since = time.time()
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1",
                                                          "items": leftovers}))  # fmt: skip
    resources = [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in leftovers]

    def remaining() -> list[str]:
        found = cluster.kubectl(
            "get", *resources, "-n", namespace, "-o", "name", "--ignore-not-found", check=False
        )
        return found.stdout.split()

    wait_for(
        lambda: not remaining(),
        timeout=90,
        message=lambda: f"not pruned: {remaining()}\n{running_operator.process.output()[-3000:]}",
    )
    deletes = running_operator.writes(
        since, lambda r: r.method == "DELETE" and r.path.endswith("-retired")
    )
    assert len(deletes) == len(leftovers), describe(deletes)
    # What the spec still asks for stays.
    cluster.kubectl("get", "configmap", names.runtime_configmap, "-n", namespace)


# --- spec update ------------------------------------------------------------------------------


def test_spec_update_rolls_out_the_affected_pods(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    name = obj["metadata"]["name"]
    names = child_names(model(obj))
    valkey_before = get_json(cluster, "statefulset", names.valkey_statefulset, "-n", ns)

    def template_hashes() -> set[str]:
        pods = get_json(cluster, "pods", "-n", ns, "-l", f"{LABEL_COMPONENT}=workers")["items"]
        return {p["metadata"]["labels"].get("pod-template-hash", "") for p in pods}

    before = template_hashes()
    new_image = "ghcr.io/shitops/hyperdrive-accelerator:0.1.1"
    cluster.kubectl(
        "patch", HDA_RESOURCE, name, "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"image": new_image}}),
    )  # fmt: skip

    def rolled() -> bool:
        deployment = get_json(cluster, "deployment", names.workers_deployment, "-n", ns)
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        hashes = template_hashes()
        return image == new_image and bool(hashes) and not (hashes & before)

    wait_for(rolled, timeout=READY_TIMEOUT, message="the workers did not roll to the new image")
    obj = wait_condition(cluster, running_operator, ns, name, "Ready", "True")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    # Valkey does not run the runtime image: it must not roll.
    valkey_after = get_json(cluster, "statefulset", names.valkey_statefulset, "-n", ns)
    assert valkey_after["metadata"]["generation"] == valkey_before["metadata"]["generation"]


# --- autoscaling --------------------------------------------------------------------------------


def workers_scaling(cluster: ClusterHandle, namespace: str, names: ChildNames) -> tuple[int, Any]:
    deployment = get_json(cluster, "deployment", names.workers_deployment, "-n", namespace)
    annotations = deployment["metadata"].get("annotations") or {}
    history = json.loads(annotations.get(SCALING_ANNOTATION) or "{}")
    return int(deployment["spec"]["replicas"]), history


def test_scale_down_window_survives_an_operator_restart(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    """A real Valkey holds the backlog (the operator measures it there: kwok pods serve nothing).
    A backlog of 35 entries at 10 per worker needs 4 workers; when it drains, the 10-minute
    scale-down window keeps them, also across a restart of the operator."""
    ns = restricted_namespace
    password = "autoscaling-test-password"
    valkey = EmbeddedValkey(data_dir=tmp_path / "valkey", password=password)
    valkey.start()
    probe_env = {"HDA_LAG_PROBE_ADDRESS": f"127.0.0.1:{valkey.port}"}
    running_operator.restart(extra_env=probe_env)
    client = redis.Redis(port=valkey.port, password=password)
    try:
        keys = [input_key("events", partition) for partition in range(2)]
        for key in keys:
            client.xgroup_create(key, WORKER_GROUP, id="0", mkstream=True)
        for number in range(35):
            client.xadd(keys[0], {"n": str(number)})
        put_secret(cluster, ns, "auth", password=password)
        autoscaling = {
            "minReplicas": 1,
            "maxReplicas": 8,
            "targetLagPerReplica": 10,
            "scaleDownStabilization": "10m",
        }
        extra = {"redis": {"storage": {"size": "1Gi", "storageClassName": LOCAL_CLASS},
                           "auth": {"existingSecret": "auth"}},
                 "workers": {"replicas": 1, "autoscaling": autoscaling}}  # fmt: skip
        obj = ready_hda(cluster, running_operator, hdas, ns, replicas=1, luns=1, extra_spec=extra)
        names = child_names(model(obj))
        wait_for(
            lambda: workers_scaling(cluster, ns, names)[0] == 4,
            timeout=READY_TIMEOUT,
            message=lambda: f"never scaled to 4: {workers_scaling(cluster, ns, names)}",
        )

        for key in keys:  # every entry delivered and acknowledged: no backlog
            client.xgroup_setid(key, WORKER_GROUP, id="$")
        replicas, history = wait_for(
            lambda: (found := workers_scaling(cluster, ns, names))[1].get("current") == 1 and found,
            timeout=READY_TIMEOUT,
            message=lambda: (
                f"the drained backlog was never seen: {workers_scaling(cluster, ns, names)}"
            ),
        )
        assert replicas == 4
        assert [n for _, n in history["ended"]] == [4]
        # The status says the backlog is gone: the new operator starts from it (no stale lag).
        wait_for(
            lambda: hda_obj(cluster, ns, obj["metadata"]["name"])["status"].get("totalLag") == 0,
            timeout=READY_TIMEOUT,
            message="the status never reported the drained backlog",
        )

        restarted = running_operator.restart(extra_env=probe_env)

        def passes_since_restart() -> int:
            return sum(
                1
                for r in running_operator.proxy.since(restarted)
                if r.method == "GET" and r.path.endswith(f"/namespaces/{ns}/secrets/auth")
            )

        # Several reconciles of this HDA by the new operator, which measured the same lag.
        wait_for(
            lambda: passes_since_restart() >= 3,
            timeout=READY_TIMEOUT,
            message="the restarted operator never reconciled the HDA",
        )
        assert hda_obj(cluster, ns, obj["metadata"]["name"])["status"]["totalLag"] == 0
        assert workers_scaling(cluster, ns, names)[0] == 4
    finally:
        client.close()
        running_operator.restart()
        valkey.stop()


# --- scale subresource ------------------------------------------------------------------------


def test_scale_subresource_sets_the_worker_count(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    name = obj["metadata"]["name"]
    names = child_names(model(obj))
    ingest_before = get_json(cluster, "deployment", names.ingest_deployment, "-n", ns)

    cluster.kubectl("scale", f"hda/{name}", "--replicas=5", "-n", ns)

    def five_ready() -> dict[str, Any] | None:
        current = hda_obj(cluster, ns, name)
        status = current.get("status") or {}
        if (
            status.get("workersReady") == "5/5"
            and condition(current, "Ready").get("status") == "True"
        ):
            return current
        return None

    obj = wait_for(
        five_ready,
        timeout=READY_TIMEOUT,
        message=lambda: dump(hda_obj(cluster, ns, name).get("status")),
    )
    deployment = get_json(cluster, "deployment", names.workers_deployment, "-n", ns)
    assert deployment["spec"]["replicas"] == 5
    assert deployment["status"]["readyReplicas"] == 5
    scale = json.loads(
        cluster.kubectl("get", f"hda/{name}", "-n", ns, "--subresource=scale", "-o", "json").stdout
    )
    assert scale["spec"]["replicas"] == 5
    assert scale["status"]["replicas"] == 5
    assert f"{LABEL_COMPONENT}=workers" in scale["status"]["selector"]
    # Scaling the workers changes nothing else.
    ingest_after = get_json(cluster, "deployment", names.ingest_deployment, "-n", ns)
    assert ingest_after["metadata"]["generation"] == ingest_before["metadata"]["generation"]


def test_metrics_export_every_operator_series_the_dashboard_alerts_and_docs_name(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    autoscaling = {"workers": {"autoscaling": {"minReplicas": 1, "maxReplicas": 7}}}
    obj = ready_hda(cluster, running_operator, hdas, ns, extra_spec=autoscaling)
    name = obj["metadata"]["name"]
    text = running_operator.process.metrics()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    per_hda = (("hda", name), ("namespace", ns))
    assert samples["hda_operator_workers_max_replicas", per_hda] == 7
    assert 1 <= samples["hda_operator_workers_replicas", per_hda] <= 7
    assert samples["hda_operator_reconciles_total", ()] >= 1
    declared = set(re.findall(r"^# TYPE (hda_operator_\w+) ", text, re.M))
    chart_files = Path(__file__).resolve().parents[2] / "charts" / "hda-operator" / "files"
    queried = set(
        re.findall(
            r"\bhda_operator_\w+",
            (chart_files / "grafana" / "hda.json").read_text()
            + (chart_files / "prometheus" / "rules.yaml").read_text(),
        )
    )
    assert queried, "the dashboard and rules query operator metrics"
    assert queried <= declared, f"queried but not exported: {sorted(queried - declared)}"
    # docs/monitoring.md's operator rows and the scrape agree in both directions.
    documented = {
        metric: family
        for metric, family in documented_metrics().items()
        if metric.startswith("hda_operator_")
    }
    assert compare_with_docs(scraped_families(text), documented) == []


def prometheus_label(pod_label: str) -> str:
    """The `__meta_kubernetes_pod_label_*` name Prometheus gives a pod label."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_pod_monitor_selects_every_runtime_pod_on_the_port_serving_metrics(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    """The chart's PodMonitor (rendered as `helm install` would with the Prometheus Operator's
    API present) picks the ingest, worker and output pods of a real HDA, each on one named port
    that is the port of its probes: the server that answers `/metrics` too."""
    ns = restricted_namespace
    name = ready_hda(cluster, running_operator, hdas, ns)["metadata"]["name"]
    rendered = cluster.helm(
        tmp_path, "template", "hda", str(CHART), "--namespace", "hda-system",
        "--set", "monitoring.podMonitor.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1/PodMonitor",
        "--show-only", "templates/podmonitor.yaml",
    ).stdout  # fmt: skip
    monitor = yaml.safe_load(rendered)
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert {endpoint["path"] for endpoint in endpoints} == {"/metrics"}
    ports = {endpoint["port"] for endpoint in endpoints}

    selected = get_json(
        cluster, "pods", "-n", ns, "-l", label_selector(monitor["spec"]["selector"])
    )["items"]
    mine = [pod for pod in selected if pod["metadata"]["labels"].get(LABEL_ACCELERATOR) == name]
    components = {pod["metadata"]["labels"][LABEL_COMPONENT] for pod in mine}
    assert components == {"ingest", "workers", "output"}
    assert len(mine) == len(selected), "only this HDA's runtime pods (no Valkey) are selected"
    for pod in mine:
        [container] = pod["spec"]["containers"]
        named = {port["name"] for port in container.get("ports", [])}
        [scraped] = named & ports  # one target per pod, never two
        assert container["readinessProbe"]["httpGet"]["port"] == scraped
        assert pod["status"].get("podIP"), "a target needs the pod's address"
    relabeled = {
        source
        for endpoint in endpoints
        for relabeling in endpoint["relabelings"]
        for source in relabeling["sourceLabels"]
    }
    for pod in mine:
        present = {prometheus_label(label) for label in pod["metadata"]["labels"]}
        assert relabeled <= present, f"relabelings read labels the pods lack: {relabeled - present}"


# --- pause ------------------------------------------------------------------------------------


def test_paused_hda_gets_no_writes_until_resumed(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    name = obj["metadata"]["name"]
    names = child_names(model(obj))
    cluster.kubectl(
        "patch", HDA_RESOURCE, name, "-n", ns, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    # Let the operator see the pause (kopf records the new spec in its diff-base annotation).
    time.sleep(3)
    since = time.time()
    cluster.kubectl("delete", "deployment", names.workers_deployment, "-n", ns, "--wait=false")
    cluster.kubectl(
        "set", "image", "statefulset", names.valkey_statefulset, "valkey=valkey/valkey:6", "-n", ns
    )
    # Two full resync periods, plus the child events: a non-paused HDA would be repaired by now.
    time.sleep(2 * RESYNC_SECONDS + 5)
    writes = running_operator.writes(since, in_namespace(ns, f"hda-{ns}-"))
    assert writes == [], describe(writes)
    assert not get_json(cluster, "deployment", names.workers_deployment, "-n", ns)

    cluster.kubectl(
        "patch", HDA_RESOURCE, name, "-n", ns, "--type=merge", "-p", '{"spec":{"paused":false}}'
    )
    wait_for(
        lambda: get_json(cluster, "deployment", names.workers_deployment, "-n", ns),
        timeout=60,
        message="resuming did not restore the worker Deployment",
    )
    wait_condition(cluster, running_operator, ns, name, "Ready", "True")


# --- delete -----------------------------------------------------------------------------------


def test_delete_removes_every_child_and_releases_fc_volumes(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    # The Valkey claim has its own retention policy: both say Delete here.
    redis = {
        "storage": {
            "size": "1Gi",
            "storageClassName": LOCAL_CLASS,
            "pvcRetentionPolicy": {"whenDeleted": "Delete"},
        }
    }
    obj = ready_hda(
        cluster, running_operator, hdas, ns, when_deleted="Delete", extra_spec={"redis": redis}
    )
    name = obj["metadata"]["name"]
    names = child_names(model(obj))
    assert all(get_json(cluster, "pv", pv) for pv in names.fc_volumes)

    cluster.kubectl("delete", HDA_RESOURCE, name, "-n", ns, "--wait=true", "--timeout=90s")

    selector = f"{LABEL_ACCELERATOR}={name}"
    kinds = "deployments,statefulsets,services,configmaps,secrets,serviceaccounts,pdb,networkpolicies,pvc,pods"

    def gone() -> bool:
        left = get_json(cluster, kinds, "-n", ns, "-l", selector).get("items", [])
        left += get_json(cluster, "pvc", "-n", ns).get("items", [])
        volumes = [get_json(cluster, "pv", pv) for pv in names.fc_volumes]
        return not left and not any(volumes)

    wait_for(
        gone,
        timeout=READY_TIMEOUT,
        message=lambda: dump(
            [
                f"{o['kind']}/{o['metadata']['name']}"
                for o in get_json(cluster, kinds, "-n", ns, "-l", selector).get("items", [])
            ]
            + [pv for pv in names.fc_volumes if get_json(cluster, "pv", pv)]
        ),
    )


# --- no silent takeover -----------------------------------------------------------------------


def test_object_with_a_childs_name_is_reported_left_untouched_and_kept_on_delete(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = "taken"
    manifest = hdas.manifest(name, ns, replicas=1, luns=1)
    names = child_names(model(manifest))
    configmap, service = names.runtime_configmap, names.ingest_service
    cluster.kubectl("create", "configmap", configmap, "-n", ns, "--from-literal=owner=someone-else")
    cluster.kubectl("create", "service", "clusterip", service, "-n", ns, "--tcp=9999:9999")
    before = {
        kind: get_json(cluster, kind, obj, "-n", ns)
        for kind, obj in (("configmap", configmap), ("service", service))
    }

    hdas.create(manifest)
    obj = wait_condition(
        cluster, running_operator, ns, name, "Degraded", "True", "ChildNameConflict"
    )
    message = condition(obj, "Degraded")["message"]
    assert f"ConfigMap/{configmap} exists and is not owned" in message
    assert f"Service/{service} exists and is not owned" in message
    events = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=ChildNameConflict")[
        "items"
    ]
    assert {e["type"] for e in events} == {"Warning"}
    assert any(configmap in e["message"] for e in events)

    for kind, before_obj in before.items():
        after = get_json(cluster, kind, before_obj["metadata"]["name"], "-n", ns)
        assert after["metadata"]["resourceVersion"] == before_obj["metadata"]["resourceVersion"]
        assert "ownerReferences" not in after["metadata"]
        managers = {m.get("manager") for m in after["metadata"].get("managedFields") or []}
        assert FIELD_MANAGER not in managers

    cluster.kubectl("delete", HDA_RESOURCE, name, "-n", ns, "--wait=true", "--timeout=90s")
    # The garbage collector removes what the HDA owned; what it did not own stays.
    wait_for(
        lambda: not get_json(cluster, "statefulsets", "-n", ns).get("items"),
        timeout=READY_TIMEOUT,
        message="the HDA's StatefulSets were never garbage collected",
    )
    assert get_json(cluster, "configmap", configmap, "-n", ns)["data"] == {"owner": "someone-else"}
    assert get_json(cluster, "service", service, "-n", ns)["spec"]["ports"][0]["port"] == 9999


# --- secrets ---------------------------------------------------------------------------------


def put_secret(cluster: ClusterHandle, namespace: str, name: str, **values: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": values,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def secrets_hashes(cluster: ClusterHandle, namespace: str, names: ChildNames) -> dict[str, str]:
    workloads = {
        "valkey": ("statefulset", names.valkey_statefulset),
        "ingest": ("deployment", names.ingest_deployment),
        "workers": ("deployment", names.workers_deployment),
        "output": ("statefulset", names.output_statefulset),
    }
    hashes = {}
    for component, (kind, name) in workloads.items():
        template = get_json(cluster, kind, name, "-n", namespace)["spec"]["template"]
        hashes[component] = template["metadata"]["annotations"].get(SECRETS_HASH_ANNOTATION, "")
    return hashes


def reads_since(operator: RunningOperator, namespace: str, secret: str, since: float) -> int:
    """Passes of the operator over an HDA since `since`: each reads the Secret by name once."""
    path = f"/namespaces/{namespace}/secrets/{secret}"
    return sum(
        1 for r in operator.proxy.since(since) if r.method == "GET" and r.path.endswith(path)
    )


def hashes_after_passes(
    cluster: ClusterHandle, operator: RunningOperator, namespace: str, names: ChildNames
) -> dict[str, str]:
    """The secrets-hash annotations once two full passes over the HDA ran from now."""
    since = operator.proxy_time()
    wait_for(
        lambda: reads_since(operator, namespace, "auth", since) >= 2,
        timeout=READY_TIMEOUT,
        message="the operator never reconciled the HDA twice",
    )
    return secrets_hashes(cluster, namespace, names)


def test_generated_password_secret_is_created_before_any_workload(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    since = running_operator.proxy_time()
    ready_hda(cluster, running_operator, hdas, ns, replicas=1, luns=1)
    writes = running_operator.writes(since, in_namespace(ns))
    paths = [f"{r.method} {r.path}" for r in writes]
    secret = next(i for i, r in enumerate(writes) if r.path.endswith("/secrets"))
    workloads = [
        i for i, r in enumerate(writes) if "/statefulsets/" in r.path or "/deployments/" in r.path
    ]
    assert workloads, paths
    assert secret < min(workloads), paths


def test_changed_password_or_token_rolls_the_pods_that_read_it(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    password, token = "first-password", "first-token"
    put_secret(cluster, ns, "auth", password=password)
    put_secret(cluster, ns, "producers", token=token)
    extra = {"redis": {"storage": {"size": "1Gi", "storageClassName": LOCAL_CLASS},
                       "auth": {"existingSecret": "auth"}},
             "ingest": {"replicas": 1, "tokenSecret": {"name": "producers"}}}  # fmt: skip
    obj = ready_hda(cluster, running_operator, hdas, ns, replicas=1, luns=1, extra_spec=extra)
    names = child_names(model(obj))
    before = secrets_hashes(cluster, ns, names)
    assert all(before.values()), before
    assert all(password not in value for value in before.values())

    put_secret(cluster, ns, "auth", password="second-password")
    after = hashes_after_passes(cluster, running_operator, ns, names)
    assert {c for c in before if before[c] != after[c]} == {"valkey", "ingest", "workers", "output"}

    put_secret(cluster, ns, "producers", token="second-token")
    final = hashes_after_passes(cluster, running_operator, ns, names)
    # ingest checks producers' token, output subscribers'
    assert {c for c in after if after[c] != final[c]} == {"ingest", "output"}


def test_password_with_a_trailing_newline_is_refused_by_name(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = "newline"
    put_secret(cluster, ns, "auth", password="from-a-file\n")
    extra = {"redis": {"storage": {"size": "1Gi", "storageClassName": LOCAL_CLASS},
                       "auth": {"existingSecret": "auth"}}}  # fmt: skip
    hdas.create(hdas.manifest(name, ns, replicas=1, luns=1, extra_spec=extra))
    obj = wait_condition(cluster, running_operator, ns, name, "Degraded", "True", "SecretInvalid")
    message = condition(obj, "Degraded")["message"]
    assert "spec.redis.auth.existingSecret" in message
    assert "Secret auth" in message
    assert "line break" in message
    # Refused: nothing that would read it was created.
    assert get_json(cluster, "statefulsets,deployments", "-n", ns)["items"] == []


# --- invalid spec -----------------------------------------------------------------------------


def test_spec_the_crd_accepts_but_the_model_rejects_is_reported_by_field(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = "badregex"
    # The CRD cannot compile regular expressions; the model does.
    pipeline = [{"redact": {"fields": ["message"], "pattern": "([0-9"}}]
    manifest = hdas.manifest(
        name, ns, extra_spec={"workers": {"replicas": 1, "pipeline": pipeline}}
    )
    hdas.create(manifest)
    obj = wait_condition(cluster, running_operator, ns, name, "Ready", "False", "InvalidSpec")
    message = condition(obj, "Ready")["message"]
    assert message.startswith("spec.workers.pipeline[0].redact.pattern:"), message
    assert condition(obj, "Degraded")["reason"] == "InvalidSpec"
    events = get_json(
        cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    assert any(e["type"] == "Warning" and e["reason"] == "InvalidSpec" for e in events)
    # Nothing is applied from a spec that cannot work.
    assert not get_json(cluster, "deployments", "-n", ns)["items"]


# --- restart ----------------------------------------------------------------------------------


def test_restart_makes_zero_writes(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    name = obj["metadata"]["name"]
    touching = in_namespace(ns, f"hda-{ns}-")

    # Quiet first: no write for this HDA for a while (the lag probe settles, rollouts finish).
    def quiet() -> bool:
        return not running_operator.writes(time.time() - 2 * RESYNC_SECONDS - 2, touching)

    wait_for(quiet, timeout=120, interval=1, message="the HDA never became quiet")

    def versions() -> dict[str, str]:
        items = get_json(cluster, "all,cm,secret,sa,pdb,netpol,pvc," + HDA_RESOURCE, "-n", ns)[
            "items"
        ]
        return {
            f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in items
        }

    before = versions()
    restarted = running_operator.restart()
    # The new process lists, reconciles every HDA at once, then twice more on its timer.
    time.sleep(2 * RESYNC_SECONDS + 5)
    writes = running_operator.writes(restarted, touching)
    assert writes == [], describe(writes)
    reads = [r for r in running_operator.proxy.since(restarted) if not r.write]
    assert reads, "the restarted operator made no requests at all: is it connected?"
    assert versions() == before
    assert condition(hda_obj(cluster, ns, name), "Ready")["status"] == "True"


# --- images: the operator's configuration ------------------------------------------------------


def pod_images(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, set[str]]:
    """Images of the running pods of one HDA, by component."""
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"{LABEL_ACCELERATOR}={name}")["items"]
    found: dict[str, set[str]] = {}
    for pod in pods:
        component = pod["metadata"]["labels"][LABEL_COMPONENT]
        found.setdefault(component, set()).update(c["image"] for c in pod["spec"]["containers"])
    return found


def template_images(cluster: ClusterHandle, namespace: str, names: ChildNames) -> dict[str, str]:
    """The container image of each workload's pod template."""
    workloads = {
        "valkey": ("statefulset", names.valkey_statefulset),
        "ingest": ("deployment", names.ingest_deployment),
        "workers": ("deployment", names.workers_deployment),
        "output": ("statefulset", names.output_statefulset),
    }
    return {
        component: get_json(cluster, kind, name, "-n", namespace)["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        for component, (kind, name) in workloads.items()
    }


def test_unpinned_hda_runs_the_operators_configured_images(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    obj = ready_hda(cluster, running_operator, hdas, ns)
    configured = running_operator.default_images
    assert configured != DefaultImages(), "the session operator must not run on the fallbacks"

    assert "image" not in obj["spec"]
    assert "image" not in obj["spec"]["redis"]
    assert obj["status"]["images"] == {"runtime": configured.runtime, "valkey": configured.valkey}
    runtime = {configured.runtime}
    expected = {"valkey": {configured.valkey}, "ingest": runtime, "workers": runtime}
    expected["output"] = runtime
    wait_for(
        lambda: pod_images(cluster, ns, obj["metadata"]["name"]) == expected,
        timeout=READY_TIMEOUT,
        message=lambda: f"pod images: {pod_images(cluster, ns, obj['metadata']['name'])}",
    )


def test_new_default_images_roll_workers_first_and_leave_pinned_hdas(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    old = running_operator.default_images
    pinned_images = {"image": "registry.test/pinned/runtime:0.9.0"}
    pinned_valkey = "registry.test/pinned/valkey:9.0"
    unpinned = ready_hda(cluster, running_operator, hdas, ns)
    pinned = ready_hda(
        cluster,
        running_operator,
        hdas,
        ns,
        extra_spec={
            **pinned_images,
            "redis": {
                "image": pinned_valkey,
                "storage": {"size": "1Gi", "storageClassName": LOCAL_CLASS},
            },
        },
    )
    names = child_names(model(unpinned))
    pinned_names = child_names(model(pinned))
    pinned_before = template_images(cluster, ns, pinned_names)
    assert pinned_before == {
        "valkey": pinned_valkey,
        "ingest": pinned_images["image"],
        "workers": pinned_images["image"],
        "output": pinned_images["image"],
    }

    # Hold the workers' rollout so the order is observable, not a race to sample.
    cluster.kubectl("rollout", "pause", "deployment", names.workers_deployment, "-n", ns)
    new = DefaultImages(
        runtime="registry.test/hda/runtime:1.1.0", valkey="registry.test/valkey/valkey:9.2"
    )
    try:
        restarted = running_operator.restart(new)
        unpinned_name = unpinned["metadata"]["name"]
        wait_condition(
            cluster, running_operator, ns, unpinned_name, "Progressing", "True",
            reason="RollingOutWorkersFirst",
        )  # fmt: skip
        held = template_images(cluster, ns, names)
        assert held == {
            "valkey": new.valkey,  # Valkey rolls on its own: its AOF is on a volume
            "ingest": old.runtime,
            "workers": new.runtime,
            "output": old.runtime,
        }

        cluster.kubectl("rollout", "resume", "deployment", names.workers_deployment, "-n", ns)
        obj = wait_condition(cluster, running_operator, ns, unpinned_name, "Progressing", "False")
        assert template_images(cluster, ns, names) == {
            "valkey": new.valkey,
            "ingest": new.runtime,
            "workers": new.runtime,
            "output": new.runtime,
        }
        assert obj["status"]["images"] == {"runtime": new.runtime, "valkey": new.valkey}
        wait_condition(cluster, running_operator, ns, unpinned_name, "Ready", "True")

        # The pinned HDA did not move, and the operator wrote none of its workloads.
        assert template_images(cluster, ns, pinned_names) == pinned_before
        pinned_status = hda_obj(cluster, ns, pinned["metadata"]["name"])["status"]
        assert pinned_status["images"] == {
            "runtime": pinned_images["image"],
            "valkey": pinned_valkey,
        }
        workloads = {
            pinned_names.valkey_statefulset,
            pinned_names.ingest_deployment,
            pinned_names.workers_deployment,
            pinned_names.output_statefulset,
        }
        moved = running_operator.writes(restarted, lambda r: r.path.rsplit("/", 1)[-1] in workloads)
        assert moved == [], describe(moved)
    finally:
        cluster.kubectl(
            "rollout", "resume", "deployment", names.workers_deployment, "-n", ns, check=False
        )
        running_operator.restart(old)


def test_invalid_default_image_fails_the_operator_start(
    running_operator: RunningOperator, tmp_path: Path
) -> None:
    process = OperatorProcess(
        running_operator.kubeconfig,
        tmp_path / "operator.log",
        env={
            **default_images_env(running_operator.default_images),
            ENV_DEFAULT_VALKEY_IMAGE: "Valkey/Valkey:9",
        },
    ).start()
    try:
        wait_for(lambda: not process.running(), timeout=60, message="the operator kept running")
        assert process.process is not None
        assert process.process.returncode == 2
        output = process.output()
        assert ENV_DEFAULT_VALKEY_IMAGE in output
        assert "'Valkey/Valkey:9' is not an image reference" in output
    finally:
        process.stop()


# --- permissions (last: looks at the whole session) --------------------------------------------


def test_operator_was_never_forbidden(running_operator: RunningOperator) -> None:
    requests = running_operator.proxy.snapshot()
    assert requests, "no requests went through the proxy"
    # An Event posted into a namespace the tests are deleting is refused by admission
    # (NamespaceTerminating), which no permission could avoid; anything else is a missing grant.
    forbidden = [r for r in requests if r.refused_by_rbac]
    assert forbidden == [], describe(forbidden)
    log = running_operator.process.output()
    lines = [
        line
        for line in log.splitlines()
        if "forbidden" in line.lower() and "being terminated" not in line
    ]
    assert lines == [], "\n".join(lines[:20])
