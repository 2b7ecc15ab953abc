"""The ServiceAccount of the runtime pods: an identity without API permissions or a token."""

from __future__ import annotations

from typing import Any

from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import Component, object_metadata
from .names import child_names


def runtime_service_account(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_metadata(
            hda, images, child_names(hda).service_account, Component.RUNTIME
        ),
        "automountServiceAccountToken": False,
    }
