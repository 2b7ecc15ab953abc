"""Every pod template passes the restricted Pod Security Standard and is fully specified."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_specs_support import (
    EXAMPLE_FILES,
    children,
    edited,
    example,
    find,
    pod_templates,
)

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted)
ALLOWED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec breaks the restricted profile (empty when it passes)."""
    problems: list[str] = []
    pod_context = pod.get("securityContext", {})
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host_field):
            problems.append(f"{host_field} is set")
    for volume in pod.get("volumes", []):
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            problems.append(f"volume {volume['name']} uses {sorted(sources)}")
    if pod_context.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    containers = [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]
    for container in containers:
        context = container.get("securityContext", {})
        where = f"container {container['name']}"
        if context.get("privileged"):
            problems.append(f"{where} is privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allows privilege escalation")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{where} may run as root")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{where} runs as uid 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ALLOWED_SECCOMP:
            problems.append(f"{where} has seccomp {seccomp.get('type')}")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{where} uses a hostPort")
    return problems


def all_pod_templates() -> list[Any]:
    return [
        pytest.param(template, id=f"{file_name}:{workload}")
        for file_name in EXAMPLE_FILES
        for workload, template in pod_templates(children(example(file_name)))
    ]


def test_checker_catches_a_root_pod() -> None:
    pod = {"containers": [{"name": "c", "securityContext": {"runAsUser": 0}}]}

    assert restricted_violations(pod)


@pytest.mark.parametrize("template", all_pod_templates())
def test_pod_passes_restricted_pod_security(template: dict[str, Any]) -> None:
    assert restricted_violations(template["spec"]) == []


@pytest.mark.parametrize("template", all_pod_templates())
def test_containers_have_read_only_root_and_writable_tmp(template: dict[str, Any]) -> None:
    for container in template["spec"]["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}


@pytest.mark.parametrize("template", all_pod_templates())
def test_containers_have_requests_limits_and_probes(template: dict[str, Any]) -> None:
    for container in template["spec"]["containers"]:
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
        assert "readinessProbe" in container
        assert "livenessProbe" in container


@pytest.mark.parametrize("template", all_pod_templates())
def test_pods_get_no_service_account_token(template: dict[str, Any]) -> None:
    assert template["spec"]["automountServiceAccountToken"] is False


def test_runtime_service_account_mounts_no_token() -> None:
    objects = children(example())
    account = next(obj for obj in objects if obj["kind"] == "ServiceAccount")

    assert account["automountServiceAccountToken"] is False


def test_spec_resources_override_defaults_key_by_key() -> None:
    # hda-full asks Valkey for requests {cpu: 500m, memory: 1Gi} and limits {memory: 2Gi}.
    valkey = find(children(example("hda-full.yaml")), "StatefulSet", "-valkey")
    resources = valkey["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def test_request_above_the_default_limit_raises_that_limit() -> None:
    def big_workers(wire: dict[str, Any]) -> None:
        wire["spec"]["workers"]["resources"] = {"requests": {"memory": "4Gi"}}

    workers = find(children(edited(example(), big_workers)), "Deployment", "-workers")
    resources = workers["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources["limits"]["memory"] == "4Gi"


def test_template_resources_win_over_spec_resources() -> None:
    def both(wire: dict[str, Any]) -> None:
        wire["spec"]["workers"]["resources"] = {"limits": {"cpu": "1"}}
        wire["spec"]["template"] = {"workers": {"resources": {"limits": {"cpu": "3"}}}}

    workers = find(children(edited(example(), both)), "Deployment", "-workers")

    assert workers["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "3"
