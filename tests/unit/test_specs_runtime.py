"""The runtime contract: command, mounted manifest, environment, ports, replicas, Services."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_specs_support import NAMESPACE, children, edited, example, find

from hda.api.consts import (
    ENV_INGEST_TOKEN,
    ENV_LOG_FORMAT,
    ENV_OUTPUT_DIR,
    ENV_OUTPUT_PEER_URL,
    ENV_POD_NAME,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
)
from hda.api.v1alpha1 import load_manifest
from hda.runtime.config import TracingConfig, load_config_text
from hda.runtime.resp import DEFAULT_COMMAND_TIMEOUT
from hda.specs.pods import http_probes

RUNTIME = [
    ("Deployment", "-ingest", "ingest"),
    ("Deployment", "-workers", "worker"),
    ("StatefulSet", "-output", "output"),
]


def container(kind: str, suffix: str, file_name: str = "hda.yaml") -> dict[str, Any]:
    workload = find(children(example(file_name)), kind, suffix)
    first: dict[str, Any] = workload["spec"]["template"]["spec"]["containers"][0]
    return first


def env_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in item["env"]}


def test_runtime_configmap_holds_a_loadable_manifest() -> None:
    hda = example("hda-full.yaml")
    configmap = find(children(hda), "ConfigMap", "telemetry-config")

    loaded = load_manifest(configmap["data"]["hda.yaml"])

    assert loaded.spec == hda.spec
    assert loaded.metadata == {"name": "telemetry", "namespace": NAMESPACE}


def test_runtime_pods_get_the_tracing_settings_and_the_hda_identity() -> None:
    def trace(wire: dict[str, Any]) -> None:
        wire["spec"]["observability"] = {
            "tracing": {"enabled": True, "endpoint": "http://otel:4318", "sampleRatio": 0.1}
        }

    hda = edited(example("hda-full.yaml"), trace)
    configmap = find(children(hda), "ConfigMap", "telemetry-config")

    config = load_config_text(configmap["data"]["hda.yaml"], source="hda.yaml")

    assert config.tracing == TracingConfig(
        endpoint="http://otel:4318", sample_ratio=0.1, hda_name="telemetry", hda_namespace=NAMESPACE
    )


@pytest.mark.parametrize(("kind", "suffix", "command"), RUNTIME)
def test_runtime_pods_run_the_component_on_the_mounted_manifest(
    kind: str, suffix: str, command: str
) -> None:
    item = container(kind, suffix)

    assert item["command"] + item["args"] == ["hda", command, "--config", "/etc/hda/hda.yaml"]
    assert {"name": "config", "mountPath": "/etc/hda", "readOnly": True} in item["volumeMounts"]


@pytest.mark.parametrize(("kind", "suffix", "command"), RUNTIME)
def test_runtime_pods_get_the_contract_environment(kind: str, suffix: str, command: str) -> None:
    env = env_of(container(kind, suffix))

    assert env[ENV_REDIS_URL]["value"] == f"redis://logs-valkey.{NAMESPACE}.svc:6379/0"
    assert env[ENV_REDIS_PASSWORD]["valueFrom"]["secretKeyRef"] == {
        "name": "logs-valkey-password",
        "key": "password",
    }
    assert env[ENV_POD_NAME]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env[ENV_LOG_FORMAT]["value"] == "json"


@pytest.mark.parametrize(
    ("kind", "suffix", "port"),
    [
        ("Deployment", "-ingest", 8080),
        ("Deployment", "-workers", 8082),
        ("StatefulSet", "-output", 8081),
    ],
)
def test_runtime_probes_use_http_health_endpoints(kind: str, suffix: str, port: int) -> None:
    item = container(kind, suffix)
    (declared,) = item["ports"]

    assert declared["containerPort"] == port
    assert item["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": declared["name"]}
    assert item["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": declared["name"]}


def test_output_gets_its_data_directory() -> None:
    assert env_of(container("StatefulSet", "-output"))[ENV_OUTPUT_DIR]["value"] == (
        "/var/lib/hda/output"
    )


def test_ingest_token_comes_from_the_spec_secret() -> None:
    env = env_of(container("Deployment", "-ingest", "hda-full.yaml"))

    assert env[ENV_INGEST_TOKEN]["valueFrom"]["secretKeyRef"] == {
        "name": "telemetry-ingest-token",
        "key": "token",
    }


def test_no_ingest_token_without_a_token_secret() -> None:
    assert ENV_INGEST_TOKEN not in env_of(container("Deployment", "-ingest"))
    assert ENV_INGEST_TOKEN not in env_of(container("StatefulSet", "-output"))


def test_output_checks_subscribers_with_the_ingest_token() -> None:
    env = env_of(container("StatefulSet", "-output", "hda-full.yaml"))

    assert env[ENV_INGEST_TOKEN]["valueFrom"]["secretKeyRef"] == {
        "name": "telemetry-ingest-token",
        "key": "token",
    }


def test_output_pods_reach_their_peers_by_stable_dns_name_without_a_replica_count() -> None:
    output = find(children(example()), "StatefulSet", "-output")
    env = env_of(output["spec"]["template"]["spec"]["containers"][0])

    assert env[ENV_OUTPUT_PEER_URL]["value"] == (
        f"http://{{pod}}.logs-output-headless.{NAMESPACE}.svc:8081"
    )
    assert output["spec"]["serviceName"] == "logs-output-headless"


def test_subscribe_service_is_a_cluster_ip_over_every_output_pod() -> None:
    objects = children(example())
    service = find(objects, "Service", "-output")
    output = find(objects, "StatefulSet", "-output")

    assert service["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in service["spec"]  # allocated, not headless
    assert service["spec"]["selector"] == output["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}
    ]


def test_output_peers_resolve_before_they_are_ready() -> None:
    headless = find(children(example()), "Service", "-output-headless")

    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def test_worker_replicas_come_from_the_controller() -> None:
    workers = find(children(example(), worker_replicas=9), "Deployment", "-workers")

    assert workers["spec"]["replicas"] == 9


def test_ingest_replicas_come_from_the_spec() -> None:
    def scale(wire: dict[str, Any]) -> None:
        wire["spec"]["ingest"]["replicas"] = 5

    ingest = find(children(edited(example(), scale)), "Deployment", "-ingest")

    assert ingest["spec"]["replicas"] == 5


def test_ingest_service_takes_type_and_port_from_the_spec() -> None:
    def expose(wire: dict[str, Any]) -> None:
        wire["spec"]["ingest"]["service"] = {"type": "LoadBalancer", "port": 443}

    service = find(children(edited(example(), expose)), "Service", "-ingest")

    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 443, "targetPort": "http", "protocol": "TCP"}
    ]


def test_worker_template_overrides_are_applied() -> None:
    pod = find(children(example("hda-full.yaml")), "Deployment", "-workers")["spec"]["template"]

    assert pod["spec"]["nodeSelector"] == {"pool": "compute"}
    assert pod["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "pipelines", "effect": "NoSchedule"}
    ]
    assert pod["metadata"]["labels"]["team"] == "observability"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_priority_class_is_applied() -> None:
    def priority(wire: dict[str, Any]) -> None:
        wire["spec"]["template"] = {"ingest": {"priorityClassName": "high"}}

    ingest = find(children(edited(example(), priority)), "Deployment", "-ingest")

    assert ingest["spec"]["template"]["spec"]["priorityClassName"] == "high"


def test_readiness_probe_takes_a_stalled_pod_out_of_service_within_ten_seconds() -> None:
    """A stalled Valkey shows in /readyz after one command deadline; the probe must then act
    within what is left of the 10 s the runtime promises (issue: stalls are noticed)."""
    readiness = http_probes("http")["readinessProbe"]
    probe_delay = readiness["periodSeconds"] * readiness["failureThreshold"]
    # Measured: /readyz turns false at most 1.4 s after the deadline (docs/runtime.md).
    assert DEFAULT_COMMAND_TIMEOUT + 1.4 + probe_delay <= 10
