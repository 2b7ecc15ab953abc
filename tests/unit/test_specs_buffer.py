"""The Valkey buffer: durable valkey.conf, password out of argv, probes, Services, policy."""

from __future__ import annotations

from typing import Any

from tests.unit.test_specs_support import children, example, find

from hda.specs import child_names, valkey_conf


def valkey_pod(file_name: str = "hda.yaml") -> dict[str, Any]:
    pod: dict[str, Any] = find(children(example(file_name)), "StatefulSet", "-valkey")["spec"][
        "template"
    ]["spec"]
    return pod


def conf_lines(file_name: str = "hda.yaml") -> list[str]:
    return valkey_conf(example(file_name)).splitlines()


def test_conf_is_append_only_without_rdb_or_eviction() -> None:
    lines = conf_lines()

    assert "appendonly yes" in lines
    assert 'save ""' in lines
    assert "maxmemory-policy noeviction" in lines
    assert "dir /data" in lines


def test_conf_takes_appendfsync_from_the_spec() -> None:
    assert "appendfsync everysec" in conf_lines("hda.yaml")
    assert "appendfsync always" in conf_lines("hda-full.yaml")


def test_conf_caps_memory_below_the_container_limit() -> None:
    # hda-full limits Valkey to 2Gi: writes fail with OOM (ingest backpressure) before a kill.
    assert f"maxmemory {int(2 * 2**30 * 0.75)}" in conf_lines("hda-full.yaml")


def test_conf_includes_the_password_file_last() -> None:
    assert conf_lines()[-1] == "include /run/valkey/auth.conf"


def test_configmap_holds_the_rendered_conf() -> None:
    configmap = find(children(example()), "ConfigMap", "-valkey-config")

    assert configmap["data"] == {"valkey.conf": valkey_conf(example())}


def test_password_never_appears_in_argv() -> None:
    container = valkey_pod()["containers"][0]
    argv = " ".join(container["command"] + container.get("args", []))

    assert "--requirepass" not in argv
    assert " -a " not in argv
    for probe in ("readinessProbe", "livenessProbe"):
        assert " -a " not in " ".join(container[probe]["exec"]["command"])


def test_probes_authenticate_through_the_environment() -> None:
    env = {item["name"]: item for item in valkey_pod()["containers"][0]["env"]}

    assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {
        "name": "logs-valkey-password",
        "key": "password",
    }


def test_readiness_requires_pong_and_liveness_accepts_loading() -> None:
    container = valkey_pod()["containers"][0]

    assert "= PONG" in container["readinessProbe"]["exec"]["command"][-1]
    assert "LOADING" in container["livenessProbe"]["exec"]["command"][-1]


def test_existing_secret_replaces_the_generated_one() -> None:
    env = {item["name"]: item for item in valkey_pod("hda-full.yaml")["containers"][0]["env"]}

    assert env["VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "telemetry-valkey"
    assert child_names(example("hda-full.yaml")).buffer_password_secret_is_generated is False


def test_claim_template_uses_the_spec_size_and_class() -> None:
    valkey = find(children(example("hda-full.yaml")), "StatefulSet", "-valkey")
    claim = valkey["spec"]["volumeClaimTemplates"][0]["spec"]

    assert claim["resources"]["requests"]["storage"] == "20Gi"
    assert claim["storageClassName"] == "fast-ssd"


def test_claim_template_leaves_the_class_to_the_cluster_default() -> None:
    valkey = find(children(example()), "StatefulSet", "-valkey")

    assert "storageClassName" not in valkey["spec"]["volumeClaimTemplates"][0]["spec"]


def test_single_replica_with_a_headless_service() -> None:
    objects = children(example())
    valkey = find(objects, "StatefulSet", "-valkey")
    headless = find(objects, "Service", "-valkey-headless")

    assert valkey["spec"]["replicas"] == 1
    assert valkey["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"


def test_client_service_exposes_6379() -> None:
    service = find(children(example()), "Service", "logs-valkey")

    assert service["spec"]["ports"] == [
        {"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}
    ]


def test_network_policy_admits_only_this_hdas_runtime_pods_on_6379() -> None:
    policy = find(children(example()), "NetworkPolicy", "-valkey")["spec"]
    (rule,) = policy["ingress"]
    peer, _operator = rule["from"]

    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "valkey"
    assert policy["policyTypes"] == ["Ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert set(peer) == {"podSelector"}  # same namespace only
    assert peer["podSelector"]["matchLabels"]["hda.shitops.dev/accelerator"] == "logs"
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["ingest", "workers", "output"]


def test_network_policy_admits_the_operator_from_any_namespace() -> None:
    policy = find(children(example()), "NetworkPolicy", "-valkey")["spec"]
    (rule,) = policy["ingress"]
    _runtime, peer = rule["from"]

    assert peer == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"hda.shitops.dev/operator": "true"}},
    }


def test_valkey_has_no_disruption_budget() -> None:
    budgets = [obj for obj in children(example()) if obj["kind"] == "PodDisruptionBudget"]

    assert sorted(budget["metadata"]["name"] for budget in budgets) == [
        "logs-ingest",
        "logs-output",
        "logs-workers",
    ]
    assert all(budget["spec"]["maxUnavailable"] == 1 for budget in budgets)
