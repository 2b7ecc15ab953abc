"""Real nodes run real pods: images from the loopback registry, logs/exec/port-forward through
the kubelet's authenticated API, Services and DNS across nodes, and nothing leaves the machine."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from hda.cluster import FC_LABEL, network
from hda.cluster.layout import REGISTRY
from hda.cluster.testing import ClusterHandle, ProbeImage, wait_for

SERVER_LABELS = {"app": "e2e-probe-server"}


def probe_pod(name: str, node: str, image: str, labels: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "ports": [{"containerPort": 8080}],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def wait_running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def running() -> client.V1Pod | None:
        pod: Any = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        return pod if statuses and all(s.ready for s in statuses) else None

    def describe() -> str:
        pod = core.read_namespaced_pod(name, namespace)
        return f"pod {namespace}/{name} not running: {pod.status}"

    return wait_for(running, timeout=90, message=describe)


@dataclass(frozen=True)
class Pods:
    namespace: str
    server: Any
    client_pod: Any
    server_node: str
    client_node: str


@pytest.fixture(scope="module")
def pods(
    real_cluster: ClusterHandle,
    core_v1: client.CoreV1Api,
    e2e_namespace: str,
    real_node_names: list[str],
    probe_image: ProbeImage,
) -> Pods:
    """A server pod (ghcr.io name) on the FC node behind a Service; a client (docker.io name)
    on the other real node."""
    server_node, client_node = real_node_names[0], real_node_names[1]
    core_v1.create_namespaced_pod(
        e2e_namespace, probe_pod("server", server_node, probe_image.ghcr, SERVER_LABELS)
    )
    core_v1.create_namespaced_pod(
        e2e_namespace, probe_pod("client", client_node, probe_image.docker_hub)
    )
    service: Any = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probe-server"},
        "spec": {"selector": SERVER_LABELS, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    core_v1.create_namespaced_service(e2e_namespace, service)
    server = wait_running(core_v1, e2e_namespace, "server")
    client_pod = wait_running(core_v1, e2e_namespace, "client")
    return Pods(e2e_namespace, server, client_pod, server_node, client_node)


def exec_probe(
    cluster: ClusterHandle, pods: Pods, *args: str, pod: str = "client", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "exec", "-n", pods.namespace, pod, "--", "/probe", *args, check=check, timeout=30
    )


def test_real_nodes_are_ready_on_their_bridges(
    core_v1: client.CoreV1Api, real_cluster: ClusterHandle, real_node_names: list[str]
) -> None:
    assert real_cluster.local is not None
    net = real_cluster.local.real.network
    for index, name in enumerate(real_node_names):
        node: Any = core_v1.read_node(name)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready[0].status == "True", name
        addresses = {(a.type, a.address) for a in node.status.addresses}
        assert ("InternalIP", net.node_ip(index)) in addresses


def test_only_the_fc_real_node_carries_the_fc_label(
    core_v1: client.CoreV1Api, real_node_names: list[str]
) -> None:
    nodes: list[Any] = [core_v1.read_node(name) for name in real_node_names]
    labels = {node.metadata.name: node.metadata.labels for node in nodes}
    assert labels["real-fc-node-0"][FC_LABEL] == "true"
    assert FC_LABEL not in labels["real-node-0"]


def test_kwok_nodes_beside_real_ones_are_tainted(core_v1: client.CoreV1Api) -> None:
    every: list[Any] = core_v1.list_node().items
    kwok = [n for n in every if n.metadata.labels.get("type") == "kwok"]
    assert kwok
    for node in kwok:
        taints = {(t.key, t.effect) for t in node.spec.taints or []}
        assert ("kwok.x-k8s.io/node", "NoSchedule") in taints


def test_pods_run_on_both_real_nodes(pods: Pods) -> None:
    assert pods.server.spec.node_name == pods.server_node
    assert pods.client_pod.spec.node_name == pods.client_node
    assert pods.server.status.pod_ip != pods.client_pod.status.pod_ip


def test_kubectl_logs_reach_the_kubelet(real_cluster: ClusterHandle, pods: Pods) -> None:
    logs = real_cluster.kubectl("logs", "-n", pods.namespace, "server").stdout
    assert "probe serving on :8080 as server" in logs


def test_kubectl_exec_runs_in_the_container(real_cluster: ClusterHandle, pods: Pods) -> None:
    assert exec_probe(real_cluster, pods, "echo", "hello", "exec").stdout == "hello exec\n"


def test_kubectl_port_forward_reaches_the_pod(real_cluster: ClusterHandle, pods: Pods) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forward = subprocess.Popen(
        [
            real_cluster.binary("kubectl"),
            f"--kubeconfig={real_cluster.kubeconfig}",
            "port-forward",
            "-n",
            pods.namespace,
            "pod/server",
            f"{port}:8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def fetch() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        assert wait_for(fetch, timeout=20, message="port-forward never answered") == (
            "hello from server\n"
        )
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_service_dns_name_resolves_and_answers_from_the_other_node(
    real_cluster: ClusterHandle, pods: Pods
) -> None:
    name = f"probe-server.{pods.namespace}.svc.cluster.local"
    resolved = exec_probe(real_cluster, pods, "resolve", name).stdout.split()
    service_ip = real_cluster.kubectl(
        "get", "service", "-n", pods.namespace, "probe-server", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert resolved == [service_ip]
    body = exec_probe(real_cluster, pods, "get", f"http://{name}/").stdout
    assert body == "hello from server\n"


def test_pods_reach_the_apiserver_through_the_kubernetes_service(
    real_cluster: ClusterHandle, pods: Pods
) -> None:
    result = exec_probe(real_cluster, pods, "dial", "kubernetes.default.svc.cluster.local:443")
    assert result.stdout == "connected\n"


def test_external_names_fail_fast_without_an_upstream(
    real_cluster: ClusterHandle, pods: Pods
) -> None:
    started = time.monotonic()
    result = exec_probe(real_cluster, pods, "resolve", "example.com", check=False)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "lookup failed" in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s: the lookup waited for an upstream"


def test_traffic_to_outside_addresses_is_dropped_by_the_guard(
    real_cluster: ClusterHandle, pods: Pods
) -> None:
    assert real_cluster.local is not None
    chain = real_cluster.local.real.network.forward_chain

    def dropped() -> int:
        out = subprocess.run(
            ["iptables", "-w", "-t", network.GUARD_TABLE, "-L", chain, "-v", "-x", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sum(
            int(line.split()[0]) for line in out.splitlines()[2:] if line.split()[2] == "DROP"
        )

    before = dropped()
    # 198.51.100.1 (TEST-NET-2) stands for any address beyond this machine.
    result = exec_probe(real_cluster, pods, "dial", "198.51.100.1:80", check=False)
    assert result.returncode != 0
    assert dropped() > before


def test_live_rules_jump_to_the_guard_first_and_never_masquerade(
    real_cluster: ClusterHandle,
) -> None:
    assert real_cluster.local is not None
    net = real_cluster.local.real.network
    table = network.GUARD_TABLE
    # Checked after the plane ran for a while: kube-proxy has synced many times by now.
    assert network.list_rules("FORWARD", table)[1] == f"-A FORWARD -j {net.forward_chain}"
    assert network.list_rules("INPUT", table)[1] == f"-A INPUT -j {net.input_chain}"
    ours = network.list_rules(net.forward_chain, table) + network.list_rules(net.input_chain, table)
    assert any(rule.endswith("-j DROP") for rule in ours)
    assert not any("MASQUERADE" in rule or "SNAT" in rule for rule in ours)


def test_missing_image_fails_fast_at_the_loopback_registry(
    real_cluster: ClusterHandle,
    core_v1: client.CoreV1Api,
    pods: Pods,
    real_node_names: list[str],
) -> None:
    assert real_cluster.registry_url is not None
    image = "ghcr.io/shitops/does-not-exist:0.0.0"
    core_v1.create_namespaced_pod(pods.namespace, probe_pod("missing", real_node_names[1], image))

    def waiting_reason() -> Any:
        pod: Any = core_v1.read_namespaced_pod("missing", pods.namespace)
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting and waiting.reason in {"ErrImagePull", "ImagePullBackOff"}:
                return waiting
        return None

    started = time.monotonic()
    waiting = wait_for(waiting_reason, timeout=30, message="the pull did not fail")
    assert time.monotonic() - started < 15
    assert "not found" in (waiting.message or "")
    # containerd asked the loopback registry, under the normalised repository path.
    assert any(
        "/v2/shitops/does-not-exist/manifests/0.0.0?ns=ghcr.io" in line and '" 404 ' in line
        for line in registry_requests(real_cluster)
    )


def registry_requests(cluster: ClusterHandle) -> list[str]:
    """The access-log lines of the loopback registry (one per HTTP request)."""
    assert cluster.local is not None
    text = cluster.local.layout.log_path(REGISTRY).read_text()
    return [line for line in text.splitlines() if line.startswith("127.0.0.1 - - [")]


@pytest.mark.parametrize(
    "expected_path",
    [
        "/v2/shitops/e2e-probe/manifests/{tag}?ns=ghcr.io",
        "/v2/library/e2e-probe/manifests/{tag}?ns=docker.io",
    ],
    ids=["ghcr.io", "docker.io-official"],
)
def test_images_are_pulled_from_the_loopback_registry_by_repository_path(
    real_cluster: ClusterHandle, pods: Pods, probe_image: ProbeImage, expected_path: str
) -> None:
    """ghcr.io/shitops/X -> `shitops/X`; docker.io official X -> `library/X` (see containerd.py)."""
    path = expected_path.format(tag=probe_image.tag)
    pulls = [line for line in registry_requests(real_cluster) if "containerd/" in line]
    assert any(path in line and '" 200 ' in line for line in pulls), pulls[-5:]
