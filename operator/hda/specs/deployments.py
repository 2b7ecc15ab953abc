"""Deployments: ingest (REST and WebSocket) and the workers that run the pipeline."""

from __future__ import annotations

from typing import Any

from hda.api.consts import INGEST_PORT, WORKER_HEALTH_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator

from .configmaps import runtime_config_hash
from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import child_names
from .pods import (
    RUNTIME_UID,
    ingest_token_env,
    pod_template,
    runtime_container,
    runtime_volumes,
)


def _deployment(
    hda: HyperDriveAccelerator,
    images: Images,
    component: Component,
    *,
    name: str,
    replicas: int,
    template: dict[str, Any],
    strategy: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(hda, images, name, component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(hda, component)},
            "strategy": strategy,
            "template": template,
        },
    }


def ingest_deployment(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    container = runtime_container(
        hda,
        images,
        Component.INGEST,
        command="ingest",
        port_name="http",
        port=INGEST_PORT,
        extra_env=ingest_token_env(hda),
    )
    template = pod_template(
        hda,
        images,
        Component.INGEST,
        containers=[container],
        volumes=runtime_volumes(hda),
        config_digest=runtime_config_hash(hda, Component.INGEST),
        uid=RUNTIME_UID,
    )
    # Producers must always find a ready ingest pod: surge first, never go below the count.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return _deployment(
        hda,
        images,
        Component.INGEST,
        name=child_names(hda).ingest_deployment,
        replicas=hda.spec.ingest.replicas,
        template=template,
        strategy=strategy,
    )


def workers_deployment(
    hda: HyperDriveAccelerator, images: Images, *, replicas: int
) -> dict[str, Any]:
    """Workers; `replicas` comes from the controller (autoscaling or spec.workers.replicas)."""
    container = runtime_container(
        hda,
        images,
        Component.WORKERS,
        command="worker",
        port_name="health",
        port=WORKER_HEALTH_PORT,
    )
    template = pod_template(
        hda,
        images,
        Component.WORKERS,
        containers=[container],
        volumes=runtime_volumes(hda),
        config_digest=runtime_config_hash(hda, Component.WORKERS),
        uid=RUNTIME_UID,
    )
    # Pending entries of a stopped worker are reclaimed by the others (XAUTOCLAIM), so a
    # rolling update may take one away before its replacement is ready.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    return _deployment(
        hda,
        images,
        Component.WORKERS,
        name=child_names(hda).workers_deployment,
        replicas=replicas,
        template=template,
        strategy=strategy,
    )
