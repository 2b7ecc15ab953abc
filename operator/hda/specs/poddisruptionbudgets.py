"""PodDisruptionBudgets: voluntary evictions take at most one pod of a component at a time.

Valkey has none: with one replica, `maxUnavailable: 1` protects nothing and `minAvailable: 1`
would block every node drain forever.
"""

from __future__ import annotations

from typing import Any

from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import child_names


def pod_disruption_budget(
    hda: HyperDriveAccelerator, images: Images, component: Component
) -> dict[str, Any]:
    names = child_names(hda)
    name = {
        Component.INGEST: names.ingest_pdb,
        Component.WORKERS: names.workers_pdb,
        Component.OUTPUT: names.output_pdb,
    }[component]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(hda, images, name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(hda, component)},
            # A crash-looping pod must not make a node undrainable.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
