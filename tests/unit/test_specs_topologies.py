"""Replicated (Sentinel) and cluster Valkey topologies: StatefulSets, Services, budgets, spread,
and what runtime pods are told."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_specs_support import children, edited, example, find

from hda.api.consts import (
    ENV_REDIS_URL,
    LABEL_COMPONENT,
    LABEL_SHARD,
)
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import valkey_conf
from hda.specs.names import child_names
from hda.specs.statefulsets import valkey_statefulset

from .test_specs_support import images


def with_redis(**redis: Any) -> HyperDriveAccelerator:
    def edit(wire: dict[str, Any]) -> None:
        wire["spec"]["redis"].update(redis)

    return edited(example(), edit)


def replicated(**redis: Any) -> HyperDriveAccelerator:
    return with_redis(topology="replicated", **redis)


def cluster(**redis: Any) -> HyperDriveAccelerator:
    return with_redis(topology="cluster", **redis)


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container_env(objects: list[dict[str, Any]], workload: str) -> dict[str, str]:
    deployment = find(objects, "Deployment", workload)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {item["name"]: item.get("value", "") for item in env}


def test_standalone_has_no_sentinels_and_rolls_itself() -> None:
    objects = children(example())

    assert not [o for o in objects if o["metadata"]["name"].endswith("-sentinel")]
    valkey = find(objects, "StatefulSet", "-valkey")
    assert valkey["spec"]["replicas"] == 1
    assert valkey["spec"]["updateStrategy"] == {"type": "RollingUpdate"}


def test_replicated_valkey_has_a_primary_and_the_replicas_and_rolls_on_delete() -> None:
    objects = children(replicated(replicas=3))

    valkey = find(objects, "StatefulSet", "-valkey")
    assert valkey["spec"]["replicas"] == 4
    assert valkey["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert valkey["spec"]["podManagementPolicy"] == "Parallel"


def test_replicated_defaults_to_two_replicas() -> None:
    assert find(children(replicated()), "StatefulSet", "-valkey")["spec"]["replicas"] == 3


def test_replicated_has_three_sentinels_running_the_valkey_image() -> None:
    hda = replicated()
    sentinels = find(children(hda), "StatefulSet", "-sentinel")
    container = sentinels["spec"]["template"]["spec"]["containers"][0]

    assert sentinels["spec"]["replicas"] == 3
    assert container["image"] == images(hda).valkey
    assert container["command"][:2] == ["sh", "-c"]
    assert container["command"][2].rstrip().endswith("--sentinel")
    assert container["ports"] == [{"name": "sentinel", "containerPort": 26379, "protocol": "TCP"}]


def test_sentinel_config_copy_is_writable_and_password_stays_out_of_argv() -> None:
    sentinels = find(children(replicated()), "StatefulSet", "-sentinel")
    pod = sentinels["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][2]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}

    assert "exec valkey-server /run/valkey/sentinel.conf --sentinel" in script
    assert mounts["/run/valkey"].get("readOnly") is not True
    assert mounts["/etc/valkey"]["readOnly"] is True
    assert 'requirepass "$escaped"' in script
    assert "unset VALKEY_PASSWORD" in script


def test_sentinels_have_a_headless_and_a_client_service() -> None:
    services = of_kind(children(replicated()), "Service")

    headless = services["logs-sentinel-headless"]["spec"]
    client = services["logs-sentinel"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert client["type"] == "ClusterIP"
    for spec in (headless, client):
        assert spec["selector"][LABEL_COMPONENT] == "sentinel"
        assert [p["port"] for p in spec["ports"]] == [26379]


def test_replicated_valkey_asks_the_sentinels_before_starting_as_pod_0() -> None:
    valkey = find(children(replicated()), "StatefulSet", "-valkey")
    script: str = valkey["spec"]["template"]["spec"]["containers"][0]["command"][2]

    asked = script.index("SENTINEL get-master-addr-by-name buffer")
    fallback = script.index('[ -n "$primary" ] || primary="logs-valkey-0.logs-valkey-headless')
    assert asked < fallback < script.index("exec valkey-server")
    assert 'if [ "$primary" != "$me" ]; then printf \'replicaof %s 6379' in script
    assert "masterauth" in script


def test_every_sentinel_is_asked() -> None:
    valkey = find(children(replicated()), "StatefulSet", "-valkey")
    script: str = valkey["spec"]["template"]["spec"]["containers"][0]["command"][2]

    for ordinal in range(3):
        assert f"logs-sentinel-{ordinal}.logs-sentinel-headless.pipelines.svc" in script


def test_replicated_conf_includes_the_pods_own_topology_file() -> None:
    lines = valkey_conf(replicated()).splitlines()

    assert "include /run/valkey/topology.conf" in lines
    assert lines[-1] == "include /run/valkey/auth.conf"
    assert "cluster-enabled yes" not in lines


def test_runtime_pods_get_every_sentinel_and_the_primary_name_in_their_url() -> None:
    env = container_env(children(replicated()), "-ingest")

    sentinels = ",".join(
        f"logs-sentinel-{i}.logs-sentinel-headless.pipelines.svc:26379" for i in range(3)
    )
    assert env[ENV_REDIS_URL] == f"redis+sentinel://{sentinels}/buffer/0"


def test_cluster_has_one_statefulset_per_shard_of_a_primary_and_its_replicas() -> None:
    objects = children(cluster(shards=4, replicas=2))
    statefulsets = of_kind(objects, "StatefulSet")

    shards = [statefulsets[f"logs-valkey-shard-{shard}"] for shard in range(4)]
    assert "logs-valkey" not in statefulsets
    for shard, statefulset in enumerate(shards):
        spec = statefulset["spec"]
        assert spec["replicas"] == 3
        assert spec["updateStrategy"] == {"type": "OnDelete"}
        assert spec["selector"]["matchLabels"][LABEL_SHARD] == str(shard)
        assert spec["template"]["metadata"]["labels"][LABEL_SHARD] == str(shard)
        assert spec["serviceName"] == "logs-valkey-headless"


def test_cluster_defaults_to_three_shards_of_one_replica() -> None:
    statefulsets = of_kind(children(cluster()), "StatefulSet")

    shards = {name: s for name, s in statefulsets.items() if "-valkey-shard-" in name}
    assert sorted(shards) == [f"logs-valkey-shard-{i}" for i in range(3)]
    assert {s["spec"]["replicas"] for s in shards.values()} == {2}


def test_cluster_has_no_sentinels() -> None:
    objects = children(cluster())

    assert not [o for o in objects if "sentinel" in o["metadata"]["name"]]


def test_cluster_conf_enables_cluster_mode_with_its_state_on_the_volume() -> None:
    lines = valkey_conf(cluster()).splitlines()

    assert "cluster-enabled yes" in lines
    assert "cluster-config-file /data/nodes.conf" in lines
    assert "cluster-preferred-endpoint-type hostname" in lines
    assert "cluster-allow-replica-migration no" in lines


def test_cluster_pods_announce_their_dns_name_and_open_the_bus_port() -> None:
    shard = find(children(cluster()), "StatefulSet", "-valkey-shard-0")
    container = shard["spec"]["template"]["spec"]["containers"][0]

    assert "cluster-announce-hostname" in container["command"][2]
    assert "$(hostname).logs-valkey-headless.pipelines.svc" in container["command"][2]
    assert {"name": "cluster-bus", "containerPort": 16379, "protocol": "TCP"} in container["ports"]


def test_runtime_pods_get_the_first_pod_of_the_first_three_shards_as_seeds() -> None:
    env = container_env(children(cluster(shards=3, replicas=1)), "-workers")

    scheme, _, rest = env[ENV_REDIS_URL].partition("://")
    assert scheme == "redis+cluster"
    assert rest.removesuffix("/0").split(",") == [
        f"logs-valkey-shard-{n}-0.logs-valkey-headless.pipelines.svc:6379" for n in range(3)
    ]


@pytest.mark.parametrize("changed", [{"shards": 4}, {"replicas": 2}])
def test_scaling_the_cluster_leaves_the_runtime_pod_templates_alone(
    changed: dict[str, int],
) -> None:
    """Ingest, workers and output keep their pod templates, so a scaling restarts none of them."""

    def runtime_templates(hda: HyperDriveAccelerator) -> dict[str, Any]:
        return {
            o["metadata"]["name"]: o["spec"]["template"]
            for o in children(hda)
            if o["kind"] in ("Deployment", "StatefulSet") and "-valkey" not in o["metadata"]["name"]
        }

    before = runtime_templates(cluster(shards=3, replicas=1))
    after = runtime_templates(cluster(**{"shards": 3, "replicas": 1, **changed}))

    assert sorted(before) == ["logs-ingest", "logs-output", "logs-workers"]
    assert after == before


@pytest.mark.parametrize(
    ("hda", "expected"),
    [
        (replicated(), {"logs-valkey": None, "logs-sentinel": None}),
        (cluster(), {f"logs-valkey-shard-{i}": str(i) for i in range(3)}),
    ],
    ids=["replicated", "cluster"],
)
def test_each_valkey_set_and_the_sentinels_get_a_budget_of_one(
    hda: HyperDriveAccelerator, expected: dict[str, str | None]
) -> None:
    budgets = of_kind(children(hda), "PodDisruptionBudget")

    for name, shard in expected.items():
        spec = budgets[name]["spec"]
        assert spec["maxUnavailable"] == 1
        assert spec["selector"]["matchLabels"].get(LABEL_SHARD) == shard


def test_standalone_valkey_has_no_budget() -> None:
    assert "logs-valkey" not in of_kind(children(example()), "PodDisruptionBudget")


def preferred_spread(statefulset: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = statefulset["spec"]["template"]["spec"].get("affinity", {})
    terms: list[dict[str, Any]] = affinity.get("podAntiAffinity", {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution", []
    )
    return terms


def test_a_shards_pods_prefer_different_nodes() -> None:
    shard = find(children(cluster()), "StatefulSet", "-valkey-shard-1")

    [term] = preferred_spread(shard)
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (shard["spec"]["selector"]["matchLabels"])
    )


def test_replicated_valkey_and_sentinels_prefer_different_nodes() -> None:
    objects = children(replicated())

    for name in ("-valkey", "-sentinel"):
        statefulset = find(objects, "StatefulSet", name)
        [term] = preferred_spread(statefulset)
        assert (
            term["podAffinityTerm"]["labelSelector"]["matchLabels"]
            == (statefulset["spec"]["selector"]["matchLabels"])
        )


def test_spread_keeps_the_users_own_affinity() -> None:
    user_term = {
        "weight": 5,
        "podAffinityTerm": {"labelSelector": {}, "topologyKey": "topology.kubernetes.io/zone"},
    }

    def edit(wire: dict[str, Any]) -> None:
        wire["spec"]["redis"]["topology"] = "replicated"
        wire["spec"].setdefault("template", {})["redis"] = {
            "affinity": {
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [user_term]}
            }
        }

    valkey = find(children(edited(example(), edit)), "StatefulSet", "-valkey")

    terms = preferred_spread(valkey)
    assert terms[0] == user_term
    assert terms[1]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_standalone_valkey_has_no_spread_preference() -> None:
    assert preferred_spread(find(children(example()), "StatefulSet", "-valkey")) == []


def test_network_policy_opens_sentinel_and_bus_ports_between_buffer_pods_only() -> None:
    policy = find(children(cluster()), "NetworkPolicy", "-valkey")["spec"]

    selected = policy["podSelector"]["matchExpressions"][0]["values"]
    [clients, peers] = policy["ingress"]
    assert selected == ["valkey", "sentinel"]
    assert [p["port"] for p in clients["ports"]] == [6379, 26379]
    assert [p["port"] for p in peers["ports"]] == [6379, 26379, 16379]
    assert peers["from"][0]["podSelector"]["matchExpressions"][0]["values"] == [
        "valkey",
        "sentinel",
    ]


def test_shard_statefulset_names_stay_within_the_bound_for_long_hda_names() -> None:
    def edit(wire: dict[str, Any]) -> None:
        wire["metadata"]["name"] = "a" * 50
        wire["spec"]["redis"]["topology"] = "cluster"

    hda = edited(example(), edit)
    names = child_names(hda).valkey_statefulsets

    assert len(set(names)) == 3
    assert all(len(name) <= 52 for name in names)
    assert valkey_statefulset(hda, images(hda), 2)["metadata"]["name"] == names[2]


def test_a_replica_waiting_for_its_primary_is_alive_but_not_ready() -> None:
    container = find(children(replicated()), "StatefulSet", "-valkey")["spec"]["template"]["spec"][
        "containers"
    ][0]
    liveness = container["livenessProbe"]["exec"]["command"][2]
    readiness = container["readinessProbe"]["exec"]["command"][2]

    assert "*MASTERDOWN*" in liveness
    assert "MASTERDOWN" not in readiness


def test_standalone_liveness_is_unchanged() -> None:
    container = find(children(example()), "StatefulSet", "-valkey")["spec"]["template"]["spec"][
        "containers"
    ][0]

    assert "MASTERDOWN" not in container["livenessProbe"]["exec"]["command"][2]


@pytest.mark.parametrize("build", [replicated, cluster])
def test_acknowledge_replica_makes_a_primary_without_a_replica_refuse_writes(build: Any) -> None:
    lines = valkey_conf(build(acknowledge="replica")).splitlines()

    assert "min-replicas-to-write 1" in lines
    assert "min-replicas-max-lag 10" in lines


@pytest.mark.parametrize("acknowledge", ["primary", "fsync"])
def test_other_acknowledge_settings_let_a_lone_primary_write(acknowledge: str) -> None:
    conf = valkey_conf(replicated(acknowledge=acknowledge))

    assert "min-replicas-to-write" not in conf


@pytest.mark.parametrize("topology", ["standalone", "replicated", "cluster"])
def test_every_pod_waits_at_most_1_s_per_dns_try(topology: str) -> None:
    # A Sentinel blocked over 2 s in a lookup enters TILT (pods.dns_config).
    objects = children(with_redis(topology=topology))
    templates = [
        obj["spec"]["template"] for obj in objects if obj["kind"] in ("StatefulSet", "Deployment")
    ]
    assert len(templates) >= 3
    for template in templates:
        options = {o["name"]: o.get("value") for o in template["spec"]["dnsConfig"]["options"]}
        assert options == {"timeout": "1", "attempts": "3"}
