"""Objects the local plane writes: fake kwok Nodes and the admin kubeconfig. Pure builders."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

#: The label HDA's output pods select by default (DESIGN.md, "Fibre Channel").
FC_LABEL: Final = "hda.shitops.dev/fibre-channel"
#: Node Feature Discovery style label for PCI class 0c04 (Fibre Channel HBA).
NFD_FC_LABEL: Final = "feature.node.kubernetes.io/pci-0c04.present"
FC_LABELS: Final[dict[str, str]] = {FC_LABEL: "true", NFD_FC_LABEL: "true"}

#: kwok manages exactly the nodes carrying this annotation (`--manage-nodes-with-annotation-...`).
KWOK_NODE_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE: Final = "fake"


@dataclass(frozen=True)
class NodeCapacity:
    """What a simulated node offers; the defaults resemble a mid-size worker."""

    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    ephemeral_storage: str = "200Gi"

    def as_resources(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": self.ephemeral_storage,
        }


@dataclass(frozen=True)
class NodeSpec:
    name: str
    fc: bool


def node_specs(nodes: int, fc_nodes: int) -> list[NodeSpec]:
    """`nodes` nodes in all, the first `fc_nodes` of them Fibre Channel attached.

    FC nodes are named `fc-node-<i>`, the others `node-<i>`, so a listing shows which is which.
    """
    if nodes < 0 or fc_nodes < 0:
        raise ValueError("node counts must not be negative")
    if fc_nodes > nodes:
        raise ValueError(f"--fc-nodes ({fc_nodes}) cannot exceed --nodes ({nodes})")
    fc = [NodeSpec(f"fc-node-{i}", fc=True) for i in range(fc_nodes)]
    plain = [NodeSpec(f"node-{i}", fc=False) for i in range(nodes - fc_nodes)]
    return fc + plain


#: Keeps real workloads off fake nodes when the plane also has real ones.
KWOK_TAINT: Final[dict[str, str]] = {
    "key": KWOK_NODE_ANNOTATION,
    "value": KWOK_NODE_ANNOTATION_VALUE,
    "effect": "NoSchedule",
}


def node_manifest(
    spec: NodeSpec, capacity: NodeCapacity | None = None, *, tainted: bool = False
) -> dict[str, Any]:
    """A Node that kwok manages. Untainted unless `tainted` (a plane that has real nodes)."""
    resources = (capacity or NodeCapacity()).as_resources()
    labels = {
        "type": "kwok",
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/role": "agent",
        "node-role.kubernetes.io/agent": "",
    }
    if spec.fc:
        labels.update(FC_LABELS)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [dict(KWOK_TAINT)]} if tainted else {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            # kwok's node-initialize stage fills conditions, addresses and nodeInfo.
        },
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kubeconfig_manifest(
    cluster_name: str,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    *,
    user: str = "admin",
) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded) for `user` (the cluster admin)."""
    context = f"hda-{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": f"{context}-{user}",
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": context,
                "context": {
                    "cluster": context,
                    "user": f"{context}-{user}",
                    "namespace": "default",
                },
            }
        ],
        "current-context": context,
        "preferences": {},
    }
