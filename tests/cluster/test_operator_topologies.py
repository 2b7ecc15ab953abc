"""Replicated and cluster topologies, with the operator running for real: the children it makes
(kwok nodes: Valkey does not run, so this checks objects, budgets, placement preferences and the
update strategy, that restricted Pod Security admits every pod, and that a removed shard's
StatefulSet stays while nothing says its slots are moved off)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from hda.api.consts import LABEL_ACCELERATOR, LABEL_COMPONENT, LABEL_SHARD
from hda.cluster.testing import ClusterHandle, wait_for
from hda.controller.buffer_watch import PROBE_OFF
from hda.testing.pytest_fixtures import (
    HDA_RESOURCE,
    LOCAL_CLASS,
    HdaFactory,
    RunningOperator,
    get_json,
)

pytest_plugins = ["hda.testing.pytest_fixtures"]
pytestmark = pytest.mark.cluster

TIMEOUT = 120.0


def create(hdas: HdaFactory, namespace: str, **redis: Any) -> str:
    name = f"t{uuid.uuid4().hex[:5]}"
    storage = {"size": "1Gi", "storageClassName": LOCAL_CLASS}
    hdas.create(hdas.manifest(name, namespace, extra_spec={"redis": {"storage": storage, **redis}}))
    return name


def wait_get(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: get_json(cluster, *args) or None,
        timeout=TIMEOUT,
        message=f"{' '.join(args)} was never created",
    )
    return found


def spread_selector(statefulset: dict[str, Any]) -> dict[str, str]:
    affinity = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    [term] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector: dict[str, str] = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    return selector


def pods(cluster: ClusterHandle, namespace: str, name: str, component: str) -> list[Any]:
    selector = f"{LABEL_ACCELERATOR}={name},{LABEL_COMPONENT}={component}"
    items: list[Any] = get_json(cluster, "pods", "-n", namespace, "-l", selector).get("items", [])
    return items


def test_replicated_hda_gets_valkey_replicas_sentinels_budgets_and_on_delete(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = create(hdas, ns, topology="replicated", replicas=2)

    valkey = wait_get(cluster, "statefulset", f"{name}-valkey", "-n", ns)
    sentinels = wait_get(cluster, "statefulset", f"{name}-sentinel", "-n", ns)
    assert valkey["spec"]["replicas"] == 3
    assert valkey["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert spread_selector(valkey) == valkey["spec"]["selector"]["matchLabels"]
    assert sentinels["spec"]["replicas"] == 3
    assert "--sentinel" in sentinels["spec"]["template"]["spec"]["containers"][0]["command"][2]

    for budget in (f"{name}-valkey", f"{name}-sentinel"):
        pdb = wait_get(cluster, "pdb", budget, "-n", ns)
        assert pdb["spec"]["maxUnavailable"] == 1
    headless = wait_get(cluster, "service", f"{name}-sentinel-headless", "-n", ns)
    assert headless["spec"]["clusterIP"] == "None"
    wait_get(cluster, "service", f"{name}-sentinel", "-n", ns)

    # status.redis names the set; outside the cluster the operator does not ask Valkey, and
    # says so rather than guessing a primary.
    buffer_status = wait_for(
        lambda: (get_json(cluster, HDA_RESOURCE, name, "-n", ns).get("status") or {}).get("redis"),
        timeout=TIMEOUT,
        message="status.redis was never written",
    )
    assert buffer_status["topology"] == "replicated"
    assert buffer_status["shards"] == [{"name": f"{name}-valkey", "replicas": 2}]
    assert buffer_status["message"] == PROBE_OFF

    # Restricted Pod Security admitted every Valkey and Sentinel pod (kwok only pretends to run).
    wait_for(
        lambda: (
            len(pods(cluster, ns, name, "valkey")) == 3
            and len(pods(cluster, ns, name, "sentinel")) == 3
        ),
        timeout=TIMEOUT,
        message="the Valkey and Sentinel pods were not all created",
    )


def test_cluster_hda_gets_one_statefulset_and_budget_per_shard(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = create(hdas, ns, topology="cluster", shards=3, replicas=1)

    for shard in range(3):
        statefulset = wait_get(cluster, "statefulset", f"{name}-valkey-shard-{shard}", "-n", ns)
        assert statefulset["spec"]["replicas"] == 2
        assert statefulset["spec"]["updateStrategy"]["type"] == "OnDelete"
        assert statefulset["spec"]["selector"]["matchLabels"][LABEL_SHARD] == str(shard)
        assert spread_selector(statefulset)[LABEL_SHARD] == str(shard)
        pdb = wait_get(cluster, "pdb", f"{name}-valkey-shard-{shard}", "-n", ns)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"][LABEL_SHARD] == str(shard)
    assert not get_json(cluster, "statefulset", f"{name}-valkey", "-n", ns)
    assert not get_json(cluster, "statefulset", f"{name}-sentinel", "-n", ns)
    wait_for(
        lambda: len(pods(cluster, ns, name, "valkey")) == 6,
        timeout=TIMEOUT,
        message="the six Valkey pods were not all created",
    )


def test_a_removed_shard_is_kept_while_nobody_says_it_is_drained(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    hdas: HdaFactory,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    name = create(hdas, ns, topology="cluster", shards=4, replicas=1)
    wait_get(cluster, "statefulset", f"{name}-valkey-shard-3", "-n", ns)

    cluster.kubectl(
        "patch", HDA_RESOURCE, name, "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"redis": {"shards": 3}}}),
    )  # fmt: skip
    generation = get_json(cluster, HDA_RESOURCE, name, "-n", ns)["metadata"]["generation"]
    status = wait_for(
        lambda: (
            found
            if (found := get_json(cluster, HDA_RESOURCE, name, "-n", ns).get("status") or {}).get(
                "observedGeneration"
            )
            == generation
            else None
        ),
        timeout=TIMEOUT,
        message="the operator never observed the lower shard count",
    )

    # The operator has pruned for this generation: the probe is off here, so the removed
    # shard cannot be known to be drained, and its StatefulSet and budget stay.
    assert get_json(cluster, "statefulset", f"{name}-valkey-shard-3", "-n", ns)
    assert get_json(cluster, "pdb", f"{name}-valkey-shard-3", "-n", ns)
    assert [shard["name"] for shard in status["redis"]["shards"]] == [
        f"{name}-valkey-shard-{shard}" for shard in range(4)
    ]
    assert status["redis"]["message"] == PROBE_OFF
