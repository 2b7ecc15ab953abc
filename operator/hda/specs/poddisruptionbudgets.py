"""PodDisruptionBudgets: voluntary evictions take at most one pod of a component at a time.

A standalone Valkey has none: with one pod, `maxUnavailable: 1` protects nothing and
`minAvailable: 1` would block every node drain forever. Replicated and cluster topologies get one
per Valkey StatefulSet (a primary and its replicas: a drain never takes two copies of a shard at
once) and one for the sentinels (two of three keep the quorum).
"""

from __future__ import annotations

from typing import Any

from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import child_names, valkey_shard_statefulset
from .statefulsets import valkey_pod_labels


def pod_disruption_budget(
    hda: HyperDriveAccelerator, images: Images, component: Component
) -> dict[str, Any]:
    names = child_names(hda)
    name = {
        Component.INGEST: names.ingest_pdb,
        Component.WORKERS: names.workers_pdb,
        Component.OUTPUT: names.output_pdb,
        Component.SENTINEL: names.sentinel_pdb,
    }[component]
    return _budget(hda, images, name, component, selector_labels(hda, component))


def valkey_pod_disruption_budgets(
    hda: HyperDriveAccelerator, images: Images
) -> list[dict[str, Any]]:
    """One budget per Valkey StatefulSet of a replicated or cluster topology; none standalone."""
    redis = hda.spec.redis
    if redis.topology == "replicated":
        return [
            _budget(
                hda,
                images,
                child_names(hda).valkey_pdb,
                Component.VALKEY,
                valkey_pod_labels(hda, None),
            )
        ]
    if redis.topology == "cluster":
        return [
            _budget(
                hda,
                images,
                valkey_shard_statefulset(hda, shard),
                Component.VALKEY,
                valkey_pod_labels(hda, shard),
            )
            for shard in range(redis.shard_count)
        ]
    return []


def _budget(
    hda: HyperDriveAccelerator,
    images: Images,
    name: str,
    component: Component,
    selector: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(hda, images, name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector},
            # A crash-looping pod must not make a node undrainable.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
