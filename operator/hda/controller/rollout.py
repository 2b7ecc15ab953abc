"""Runtime image changes roll the workers first.

Ingest and output move to a new runtime image only once the worker Deployment runs it
everywhere: no newer ingest writes what an older worker would then process, and no newer output
reads what an older worker wrote. Until then they are built with the image they already run.
This holds for any runtime image change: an operator upgrade with a new default, or a new pin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hda.specs import Component, Images


def workers_first(
    images: Images,
    *,
    workers: Mapping[str, Any] | None,
    ingest: Mapping[str, Any] | None,
    output: Mapping[str, Any] | None,
) -> Images:
    """`images`, with ingest and output held on their live image until the workers rolled out."""
    if rolled_out_to(workers, images.runtime):
        return images
    for component, live in ((Component.INGEST, ingest), (Component.OUTPUT, output)):
        running = container_image(live)
        if running is not None:
            images = images.hold(component, running)
    return images


def container_image(live: Mapping[str, Any] | None) -> str | None:
    """The image of a live workload's (single) container; None when there is no workload."""
    if live is None:
        return None
    containers = (((live.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    return str(containers[0]["image"]) if containers else None


def rolled_out_to(deployment: Mapping[str, Any] | None, image: str) -> bool:
    """True when every pod of `deployment` runs `image` and is available (as `kubectl rollout
    status` decides: the controller saw the latest generation, no old pod is left)."""
    if deployment is None or container_image(deployment) != image:
        return False
    status = deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and updated >= wanted
        and int(status.get("replicas") or 0) <= updated
        and int(status.get("availableReplicas") or 0) >= updated
    )
