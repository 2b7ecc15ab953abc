"""Identities of the real nodes and of the host processes serving them, from the plane's CA.

- kubelet client: CN `system:node:NAME`, O `system:nodes` (the Node authorizer and the
  NodeRestriction admission plugin scope it to its own node);
- kubelet serving: the node IP as SAN, so the apiserver verifies it
  (`--kubelet-certificate-authority`) when it dials the InternalIP;
- kube-proxy client: CN `system:kube-proxy` (bound to `system:node-proxier` by bootstrap RBAC);
- CoreDNS client: CN `hda:coredns`, allowed only to list and watch what the `kubernetes`
  plugin reads (`rbac_manifests`);
- the apiserver's kubelet client (`pki.certificate_requests`) is bound to the bootstrap role
  `system:kubelet-api-admin`, so `kubectl logs/exec/port-forward` pass the kubelet's webhook
  authorization; nothing is anonymous and nothing is AlwaysAllow.
Pure builders; the files are made by `pki.ensure_leaf`.
"""

from __future__ import annotations

from typing import Any, Final

from hda.cluster import flags
from hda.cluster.pki import CertRequest

NODES_ORGANIZATION: Final = "system:nodes"
KUBE_PROXY_USER: Final = "system:kube-proxy"
COREDNS_USER: Final = "hda:coredns"
KUBE_PROXY_CERT: Final = "kube-proxy.crt"
KUBE_PROXY_KEY: Final = "kube-proxy.key"
COREDNS_CERT: Final = "coredns.crt"
COREDNS_KEY: Final = "coredns.key"


def kubelet_client_request(node_name: str) -> CertRequest:
    return CertRequest(
        cert_file=f"kubelet-client-{node_name}.crt",
        key_file=f"kubelet-client-{node_name}.key",
        common_name=f"system:node:{node_name}",
        organization=NODES_ORGANIZATION,
        client=True,
    )


def kubelet_serving_request(node_name: str, node_ip: str) -> CertRequest:
    return CertRequest(
        cert_file=f"kubelet-serving-{node_name}.crt",
        key_file=f"kubelet-serving-{node_name}.key",
        common_name=f"system:node:{node_name}",
        organization=NODES_ORGANIZATION,
        server=True,
        dns_names=(node_name,),
        ip_addresses=(node_ip,),
    )


def shared_requests() -> list[CertRequest]:
    """Identities of the host processes that serve every real node."""
    return [
        CertRequest(
            cert_file=KUBE_PROXY_CERT,
            key_file=KUBE_PROXY_KEY,
            common_name=KUBE_PROXY_USER,
            client=True,
        ),
        CertRequest(
            cert_file=COREDNS_CERT, key_file=COREDNS_KEY, common_name=COREDNS_USER, client=True
        ),
    ]


def rbac_manifests() -> list[dict[str, Any]]:
    """Bindings for the apiserver's kubelet client and CoreDNS (least privilege)."""
    rbac = "rbac.authorization.k8s.io/v1"
    labels = {"app.kubernetes.io/managed-by": "hda-cluster"}
    return [
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "hda:apiserver-kubelet-client", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": flags.KUBELET_CLIENT_COMMON_NAME,
                }
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": COREDNS_USER, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": COREDNS_USER, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": COREDNS_USER,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
            ],
        },
    ]
