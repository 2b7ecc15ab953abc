"""The Valkey password Secret the operator generates when the user brings none.

It is created once and never re-applied or rotated: a new password would lock every client out.
"""

from __future__ import annotations

import secrets

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import ChildNames, Images, generated_password_secret

from .apply import foreign
from .kube import ApiError, Kube, kind_of
from .observe import Cache, find_child
from .state import Key, NamespaceTerminatingError, Stats, Writes


async def ensure_password_secret(  # noqa: PLR0917
    kube: Kube,
    hda: HyperDriveAccelerator,
    images: Images,
    names: ChildNames,
    cache: Cache,
    key: Key,
    stats: Stats,
    writes: Writes,
) -> None:
    """Create the generated password Secret if the HDA needs one and it does not exist."""
    if not names.valkey_password_secret_is_generated:
        return
    secret_kind = kind_of({"apiVersion": "v1", "kind": "Secret"})
    if find_child(cache, secret_kind, hda.namespace, key[1], names.valkey_password_secret):
        return
    try:
        created = await kube.create(
            generated_password_secret(hda, images, secrets.token_urlsafe(32))
        )
    except ApiError as error:
        if error.namespace_terminating:
            raise NamespaceTerminatingError from error
        writes.errors.append(f"Secret/{names.valkey_password_secret}: {error}")
        return
    if created is not None:
        stats.creates += 1
        writes.done.append(f"Secret/{names.valkey_password_secret} (created once)")
        return
    # A Secret of this name exists but the watch (our labels only) does not see it: is it ours?
    try:
        live = await kube.get(secret_kind, hda.namespace, names.valkey_password_secret)
    except ApiError as error:
        writes.errors.append(f"Secret/{names.valkey_password_secret}: {error}")
        return
    clash = foreign(live, hda, secret_kind)
    if clash is not None:
        writes.errors.append(clash)
