"""The NetworkPolicy that lets only this HDA's runtime pods (and the operator) reach its Valkey."""

from __future__ import annotations

from typing import Any

from hda.api.consts import (
    LABEL_ACCELERATOR,
    LABEL_COMPONENT,
    LABEL_NAME,
    LABEL_OPERATOR_POD,
    REDIS_PORT,
)
from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import APP_NAME, RUNTIME_COMPONENTS, Component, object_metadata, selector_labels
from .names import child_names, label_value


def valkey_network_policy(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    # A podSelector without namespaceSelector matches only this namespace.
    runtime_pods = {
        "matchLabels": {LABEL_NAME: APP_NAME, LABEL_ACCELERATOR: label_value(hda.name)},
        "matchExpressions": [
            {
                "key": LABEL_COMPONENT,
                "operator": "In",
                "values": [component.value for component in RUNTIME_COMPONENTS],
            }
        ],
    }
    return {
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
                    "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                }
            ],
        },
    }
