"""kubelet and kube-proxy of the real nodes: KubeletConfiguration, KubeProxyConfiguration, argv.

Pure builders. Choices that matter:
- webhook authentication and authorization, no anonymous access: the apiserver reaches the
  kubelet with its own client certificate (`node_pki`);
- the kubelet serves on its node IP with a certificate from the plane's CA;
- cgroup driver `cgroupfs`, except `systemd` on cgroup v2 with systemd as PID 1; on cgroup v1
  `failCgroupV1: false` (1.35+ refuses v1 otherwise); each node has its own cgroup root;
- eviction and image GC thresholds relaxed so a busy small disk does not evict the test pods;
- `resolvConf: ""`: pods never inherit the host's resolver, only the cluster DNS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hda.cluster.layout import KUBE_PROXY, KUBELET
from hda.cluster.network import CLUSTER_DOMAIN, DNS_SERVICE_IP

KUBELET_API: Final = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API: Final = "kubeproxy.config.k8s.io/v1alpha1"


@dataclass(frozen=True)
class KubeletSettings:
    """What differs between the kubelets of one host."""

    node_name: str
    node_ip: str
    pod_cidr: str
    port: int
    healthz_port: int
    root_dir: Path
    cert_dir: Path
    pod_logs_dir: Path
    containerd_socket: Path
    client_ca_file: Path
    tls_cert_file: Path
    tls_key_file: Path
    cgroup_root: str
    systemd_cgroup: bool
    labels: dict[str, str]


def kubelet_config(settings: KubeletSettings) -> dict[str, Any]:
    runtime = f"unix://{settings.containerd_socket}"
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "address": settings.node_ip,
        "port": settings.port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": settings.healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "30s"},
            "x509": {"clientCAFile": str(settings.client_ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(settings.tls_cert_file),
        "tlsPrivateKeyFile": str(settings.tls_key_file),
        "containerRuntimeEndpoint": runtime,
        "imageServiceEndpoint": runtime,
        "cgroupDriver": "systemd" if settings.systemd_cgroup else "cgroupfs",
        "cgroupRoot": settings.cgroup_root,
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "podCIDR": settings.pod_cidr,
        "podLogsDir": str(settings.pod_logs_dir),
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": False,
        "enforceNodeAllocatable": ["pods"],
        "protectKernelDefaults": False,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def kubelet_args(
    bin_dir: Path, settings: KubeletSettings, config_path: Path, kubeconfig: Path
) -> list[str]:
    labels = ",".join(f"{key}={value}" for key, value in sorted(settings.labels.items()))
    return [
        str(bin_dir / KUBELET),
        f"--config={config_path}",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={settings.node_name}",
        f"--node-ip={settings.node_ip}",
        f"--root-dir={settings.root_dir}",
        f"--cert-dir={settings.cert_dir}",
        f"--node-labels={labels}",
        "--v=1",
    ]


def cgroup_root(key: str, node_name: str) -> str:
    """The node's cgroup parent (cgroupfs path); under systemd, a slice of the same name."""
    return f"/hda-{key}-{node_name}"


def cgroup_root_prefixes(key: str) -> tuple[str, ...]:
    """Top-level cgroup names of a cluster's nodes: cgroupfs, and the systemd slice form (the
    kubelet's systemd driver writes `-` as `_` and appends `.slice`). Untested on cgroup v2."""
    return (cgroup_root(key, ""), f"/hda_{key}_")


def kube_proxy_config(
    *,
    kubeconfig: Path,
    hostname: str,
    cluster_cidr: str,
    healthz_port: int,
    metrics_port: int,
) -> dict[str, Any]:
    """iptables mode; NodePorts only on the cluster's own addresses; no conntrack sysctls."""
    return {
        "apiVersion": KUBE_PROXY_API,
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": hostname,
        "clusterCIDR": cluster_cidr,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [cluster_cidr],
        # 0 leaves the kernel's values alone: writing them needs sysctls a container host
        # may refuse, and the defaults are fine for a test plane.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
    }


def kube_proxy_args(bin_dir: Path, config_path: Path) -> list[str]:
    return [str(bin_dir / KUBE_PROXY), f"--config={config_path}", "--v=1"]
