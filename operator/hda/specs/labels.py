"""Labels, selectors, owner references and metadata shared by every child.

Only labels the operator defines are set. Nothing from the HDA's own metadata is copied: Argo CD
tracks resources by `app.kubernetes.io/instance` or `argocd.argoproj.io/tracking-id`, and a child
carrying the HDA's values would be pruned or shown out of sync by Argo CD.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from hda.api.consts import (
    API_VERSION,
    GROUP,
    KIND,
    LABEL_ACCELERATOR,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VERSION,
)
from hda.api.v1alpha1 import HyperDriveAccelerator

from .names import label_value

if TYPE_CHECKING:
    from .images import Images

# Set on cluster-scoped FC PersistentVolumes, which cannot carry an owner reference.
LABEL_NAMESPACE: Final = f"{GROUP}/namespace"

APP_NAME: Final = "hyperdrive-accelerator"
MANAGED_BY: Final = "hda-operator"

_LABEL_VALUE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class Component(StrEnum):
    """The `app.kubernetes.io/component` of each part of an HDA."""

    VALKEY = "valkey"
    SENTINEL = "sentinel"  # Valkey Sentinel of a replicated topology (the Valkey image)
    INGEST = "ingest"
    WORKERS = "workers"
    OUTPUT = "output"
    RUNTIME = "runtime"  # shared by ingest, workers and output: config, ServiceAccount
    STORAGE = "storage"  # FC PersistentVolumes


RUNTIME_COMPONENTS: Final = (Component.INGEST, Component.WORKERS, Component.OUTPUT)


def image_version(image: str) -> str:
    """The tag of an image reference as a label value (`latest` when it has none)."""
    reference = image.split("@", 1)[0]
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # the colon belonged to a registry port
        tag = ""
    cleaned = _LABEL_VALUE_CHARS.sub("-", tag)[:63].strip("-_.")
    return cleaned or "latest"


def selector_labels(hda: HyperDriveAccelerator, component: Component) -> dict[str, str]:
    """Labels that select one component's pods; stable for the life of the HDA."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_ACCELERATOR: label_value(hda.name),
        LABEL_COMPONENT: component.value,
    }


def standard_labels(
    hda: HyperDriveAccelerator, images: Images, component: Component
) -> dict[str, str]:
    """Every label the operator puts on a child of `component`; the version is its image's tag."""
    return {
        **selector_labels(hda, component),
        LABEL_INSTANCE: label_value(hda.name),
        LABEL_PART_OF: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_VERSION: image_version(images.of(component)),
    }


def worker_selector(hda: HyperDriveAccelerator) -> dict[str, str]:
    """Labels selecting the worker pods (the scale subresource's `status.selector`)."""
    return selector_labels(hda, Component.WORKERS)


def owner_reference(hda: HyperDriveAccelerator) -> dict[str, Any]:
    """The controller owner reference every namespaced child carries."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": hda.name,
        "uid": str(hda.metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(
    hda: HyperDriveAccelerator, images: Images, name: str, component: Component
) -> dict[str, Any]:
    """Metadata of a namespaced child: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": hda.namespace,
        "labels": standard_labels(hda, images, component),
        "ownerReferences": [owner_reference(hda)],
    }
