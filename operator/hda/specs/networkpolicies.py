"""The NetworkPolicy that lets only this HDA's runtime pods (and the operator) reach its Valkey.

Replicated and cluster topologies widen it to the sentinels (port 26379), and let the buffer's
own pods reach each other: replication, Sentinel's checks, and the cluster bus (16379).
"""

from __future__ import annotations

from typing import Any

from hda.api.consts import (
    CLUSTER_BUS_PORT,
    LABEL_ACCELERATOR,
    LABEL_COMPONENT,
    LABEL_NAME,
    LABEL_OPERATOR_POD,
    REDIS_PORT,
    SENTINEL_PORT,
)
from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import APP_NAME, RUNTIME_COMPONENTS, Component, object_metadata, selector_labels
from .names import child_names, label_value

BUFFER_COMPONENTS = (Component.VALKEY, Component.SENTINEL)


def _pods_of(hda: HyperDriveAccelerator, components: tuple[Component, ...]) -> dict[str, Any]:
    # A podSelector without namespaceSelector matches only this namespace.
    return {
        "matchLabels": {LABEL_NAME: APP_NAME, LABEL_ACCELERATOR: label_value(hda.name)},
        "matchExpressions": [
            {
                "key": LABEL_COMPONENT,
                "operator": "In",
                "values": [component.value for component in components],
            }
        ],
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def valkey_network_policy(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    runtime_pods = _pods_of(hda, RUNTIME_COMPONENTS)
    policy: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(hda, images, child_names(hda).network_policy, Component.VALKEY),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(hda, Component.VALKEY)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": runtime_pods},
                        # The operator probes lag (XINFO) from its own namespace.
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {LABEL_OPERATOR_POD: "true"}},
                        },
                    ],
                    "ports": _tcp(REDIS_PORT),
                }
            ],
        },
    }
    if hda.spec.redis.topology == "standalone":
        return policy
    buffer_pods = _pods_of(hda, BUFFER_COMPONENTS)
    spec: dict[str, Any] = policy["spec"]
    spec["podSelector"] = buffer_pods
    spec["ingress"][0]["ports"] = _tcp(REDIS_PORT, SENTINEL_PORT)
    spec["ingress"].append(
        {
            "from": [{"podSelector": buffer_pods}],
            "ports": _tcp(REDIS_PORT, SENTINEL_PORT, CLUSTER_BUS_PORT),
        }
    )
    return policy
