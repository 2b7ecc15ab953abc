"""The generated Valkey password Secret (created once by the controller, never rotated)."""

from __future__ import annotations

import base64
from typing import Any, Final

from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import Component, object_metadata
from .names import child_names

PASSWORD_KEY: Final = "password"  # noqa: S105 - a key name, not a secret


def generated_password_secret(
    hda: HyperDriveAccelerator, images: Images, password: str
) -> dict[str, Any]:
    """The Secret holding `password` under key `password`, owned by the HDA."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(
            hda, images, child_names(hda).buffer_password_secret, Component.VALKEY
        ),
        "type": "Opaque",
        "data": {PASSWORD_KEY: base64.b64encode(password.encode()).decode()},
    }
