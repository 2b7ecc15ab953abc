"""Every desired child of an HDA, in the order the controller should apply them."""

from __future__ import annotations

from typing import Any

from hda.api.v1alpha1 import HyperDriveAccelerator

from .configmaps import buffer_configmap, runtime_configmap
from .deployments import ingest_deployment, workers_deployment
from .images import Images
from .labels import Component
from .networkpolicies import valkey_network_policy
from .persistentvolumes import fc_persistent_volumes
from .poddisruptionbudgets import pod_disruption_budget, valkey_pod_disruption_budgets
from .serviceaccounts import runtime_service_account
from .services import (
    buffer_service,
    ingest_service,
    output_headless_service,
    output_service,
    sentinel_headless_service,
    sentinel_service,
    valkey_headless_service,
)
from .statefulsets import output_statefulset, sentinel_statefulset, valkey_statefulsets


def desired_children(
    hda: HyperDriveAccelerator, images: Images, *, worker_replicas: int
) -> list[dict[str, Any]]:
    """All children except the generated password Secret (created once, never re-applied).

    Dependencies come first: identity and config, then Valkey, then its clients, and the
    cluster-scoped FC PersistentVolumes before the output StatefulSet that claims them.
    Replicated topologies add their sentinels; cluster topologies one StatefulSet per shard.
    """
    return [
        runtime_service_account(hda, images),
        runtime_configmap(hda, images),
        buffer_configmap(hda, images),
        valkey_network_policy(hda, images),
        valkey_headless_service(hda, images),
        buffer_service(hda, images),
        *valkey_statefulsets(hda, images),
        *valkey_pod_disruption_budgets(hda, images),
        *_sentinels(hda, images),
        ingest_service(hda, images),
        ingest_deployment(hda, images),
        pod_disruption_budget(hda, images, Component.INGEST),
        workers_deployment(hda, images, replicas=worker_replicas),
        pod_disruption_budget(hda, images, Component.WORKERS),
        *fc_persistent_volumes(hda, images),
        output_headless_service(hda, images),
        output_service(hda, images),
        output_statefulset(hda, images),
        pod_disruption_budget(hda, images, Component.OUTPUT),
    ]


def _sentinels(hda: HyperDriveAccelerator, images: Images) -> list[dict[str, Any]]:
    if hda.spec.redis.topology != "replicated":
        return []
    return [
        sentinel_headless_service(hda, images),
        sentinel_service(hda, images),
        sentinel_statefulset(hda, images),
        pod_disruption_budget(hda, images, Component.SENTINEL),
    ]
