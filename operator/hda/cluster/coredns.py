"""Cluster DNS for the real nodes: CoreDNS as a host process, and the kube-dns Service.

Why a host process and not a pod: it needs no image, it is up before the first pod starts (so
no pod ever sees a DNS timeout at start), and its identity is a client certificate bound to a
role that can only list and watch Services, EndpointSlices, Pods and Namespaces. It listens on
the first node's bridge address, which the selector-less `kube-dns` Service (fixed ClusterIP
10.96.0.10) reaches through a hand-written EndpointSlice. The INPUT guard of `network` drops
that address for every interface but loopback and the cluster's bridges.

The Corefile has the `kubernetes` plugin and NO `forward` plugin: a name outside
`cluster.local` is answered at once with an error (nothing handles it), never looked up
outside this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from hda.cluster.layout import COREDNS
from hda.cluster.network import CLUSTER_DOMAIN, DNS_SERVICE_IP

DNS_PORT: Final = 53
SERVICE_NAME: Final = "kube-dns"
SERVICE_NAMESPACE: Final = "kube-system"
_MANAGED_BY: Final = "hda-cluster"


def corefile(*, listen_address: str, kubeconfig: Path, ready_port: int) -> str:
    return "\n".join(
        [
            f".:{DNS_PORT} {{",
            f"    bind {listen_address}",
            "    errors",
            f"    ready 127.0.0.1:{ready_port}",
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
            f"        kubeconfig {kubeconfig}",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            "        ttl 30",
            "    }",
            "    cache 30",
            "    loadbalance",
            "}",
            "",
        ]
    )


def coredns_args(bin_dir: Path, corefile_path: Path) -> list[str]:
    return [str(bin_dir / COREDNS), "-conf", str(corefile_path)]


def ready_url(ready_port: int) -> str:
    return f"http://127.0.0.1:{ready_port}/ready"


def dns_manifests(listen_address: str) -> list[dict[str, Any]]:
    """The kube-dns Service (no selector) and its EndpointSlice pointing at CoreDNS."""
    labels = {"k8s-app": "kube-dns", "app.kubernetes.io/managed-by": _MANAGED_BY}
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": name, "protocol": protocol, "port": DNS_PORT, "targetPort": DNS_PORT}
                    for name, protocol in ports
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{SERVICE_NAME}-host",
                "namespace": SERVICE_NAMESPACE,
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": SERVICE_NAME,
                    "endpointslice.kubernetes.io/managed-by": _MANAGED_BY,
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [listen_address], "conditions": {"ready": True}}],
            "ports": [
                {"name": name, "protocol": protocol, "port": DNS_PORT} for name, protocol in ports
            ],
        },
    ]
