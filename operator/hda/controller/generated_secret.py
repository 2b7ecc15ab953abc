"""The Valkey password Secret the operator generates when the user brings none.

It is created once, before any workload that reads it, and never re-applied or rotated: a new
password would lock every client out. If it is deleted, the next pass creates a new one and the
pods that read it roll (their template carries its digest).
"""

from __future__ import annotations

import secrets
from typing import Any

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import ChildNames, Images, generated_password_secret

from .apply import foreign
from .kube import ApiError, Kube
from .secret_inputs import SECRET, SecretInputs
from .state import NamespaceTerminatingError, Stats, Writes


async def ensure_password_secret(  # noqa: PLR0917
    kube: Kube,
    hda: HyperDriveAccelerator,
    images: Images,
    names: ChildNames,
    found: SecretInputs,
    stats: Stats,
    writes: Writes,
) -> dict[str, Any] | None:
    """Create the generated password Secret if the HDA needs one and it does not exist; the
    created Secret, or None when nothing was created."""
    name = names.buffer_password_secret
    if not names.buffer_password_secret_is_generated:
        return None
    live = found.bodies.get(name)
    if live is not None:
        clash = foreign(live, hda, SECRET)
        if clash is not None:
            writes.errors.append(clash)
        return None
    try:
        created = await kube.create(
            generated_password_secret(hda, images, secrets.token_urlsafe(32))
        )
    except ApiError as error:
        if error.namespace_terminating:
            raise NamespaceTerminatingError from error
        writes.errors.append(f"Secret/{name}: {error}")
        return None
    if created is None:  # created since it was read: the next pass sees it
        return None
    stats.creates += 1
    writes.done.append(f"Secret/{name} (created once)")
    return created
