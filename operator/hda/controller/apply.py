"""Apply and prune: make the live children what was built, and delete what is no longer wanted.

Only objects that differ from the desired ones are applied; objects owned by something else
are never touched and are reported instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from hda.api.consts import LABEL_ACCELERATOR
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import LABEL_NAMESPACE
from hda.specs.names import label_value

from .compare import APPLIED_HASH, first_difference
from .kube import KINDS, ApiError, Kind, Kube, kind_of
from .observe import Cache, find_child
from .state import AppliedMemory, Key, NamespaceTerminatingError, Stats, Writes, log_fields
from .status import CONFLICT_MARKER

log = logging.getLogger("hda.controller")

# An object we applied is trusted to be as applied for this long, while the watch catches up.
SETTLE_SECONDS: Final = 5.0

# Created once (the generated Secret) or by the StatefulSets (claims): never pruned.
_KEPT_KINDS: Final = frozenset({"Secret", "PersistentVolumeClaim"})


async def apply_children(  # noqa: PLR0917
    kube: Kube,
    hda: HyperDriveAccelerator,
    desired: list[dict[str, Any]],
    cache: Cache,
    key: Key,
    memory: AppliedMemory,
    stats: Stats,
    writes: Writes,
) -> None:
    """Apply every desired object whose live copy differs (or is missing)."""
    for obj in desired:
        kind = kind_of(obj)
        name = obj["metadata"]["name"]
        live = find_child(cache, kind, hda.namespace, key[1], name)
        why = why_apply(obj, live, kind, memory)
        if why is None:
            continue
        try:
            if live is None:
                # The watch sees only objects with our labels: one of this name without them
                # would be adopted by a forced apply. Look before creating.
                live = await kube.get(kind, obj["metadata"].get("namespace"), name)
            clash = foreign(live, hda, kind)
            if clash is not None:
                writes.errors.append(clash)
                continue
            result = await kube.apply(obj)
        except ApiError as error:
            if error.namespace_terminating:
                raise NamespaceTerminatingError from error
            writes.errors.append(f"{obj['kind']}/{name}: {error}")
            continue
        stats.applies += 1
        memory[(kind.plural, hda.namespace, name)] = (
            obj["metadata"]["annotations"][APPLIED_HASH],
            time.monotonic(),
        )
        writes.done.append(f"{obj['kind']}/{name} ({why})")
        log.info("applied", extra=log_fields(key, object=f"{obj['kind']}/{name}", reason=why))
        leftover = first_difference(obj, result)
        if leftover is not None:
            log.warning(
                "applied object still differs: comparison would not converge",
                extra=log_fields(key, object=f"{obj['kind']}/{name}", field=leftover),
            )


def why_apply(
    obj: dict[str, Any], live: dict[str, Any] | None, kind: Kind, memory: AppliedMemory
) -> str | None:
    """None when the live object already is the desired one; else why it must be applied."""
    meta = obj["metadata"]
    recent = memory.get((kind.plural, meta.get("namespace", ""), meta["name"]))
    if live is None:
        if recent is not None and time.monotonic() - recent[1] < SETTLE_SECONDS:
            return None  # just applied; the watch has not delivered it yet
        return "missing"
    difference = first_difference(obj, live)
    if difference is None:
        return None
    wanted = meta["annotations"][APPLIED_HASH]
    if recent is not None and recent[0] == wanted and time.monotonic() - recent[1] < SETTLE_SECONDS:
        return None
    if difference.startswith(f".metadata.annotations.{APPLIED_HASH}"):
        return "spec changed"
    return f"drift at {difference}"


async def prune(  # noqa: PLR0917
    kube: Kube,
    hda: HyperDriveAccelerator,
    desired: list[dict[str, Any]],
    cache: Cache,
    key: Key,
    stats: Stats,
    writes: Writes,
    retained: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Delete children this HDA owns that the spec no longer asks for, except `retained`
    ((plural, name): a removed shard's StatefulSet and budget until its slots are moved off)."""
    wanted = {(kind_of(o).plural, o["metadata"]["name"]) for o in desired} | retained
    for kind in KINDS:
        if kind.kind in _KEPT_KINDS:
            continue
        for live in cache.children(kind, hda.namespace, key[1]):
            name = str(live["metadata"]["name"])
            if (kind.plural, name) in wanted:
                continue
            if foreign(live, hda, kind) is not None:
                continue
            if not kind.namespaced and (live.get("status") or {}).get("phase") == "Bound":
                continue  # a PV still holding a claim's data stays until the claim goes
            if live["metadata"].get("deletionTimestamp"):
                continue
            try:
                await kube.delete(kind, live["metadata"].get("namespace"), name)
            except ApiError as error:
                writes.errors.append(f"{kind.kind}/{name}: {error}")
                continue
            stats.deletes += 1
            writes.done.append(f"{kind.kind}/{name} (deleted: no longer in the spec)")


def foreign(live: dict[str, Any] | None, hda: HyperDriveAccelerator, kind: Kind) -> str | None:
    """A message when `live` belongs to something else than this HDA; None when it is ours.

    Namespaced children are ours by owner reference; cluster-scoped ones (FC PersistentVolumes),
    which cannot carry one, by the labels naming this HDA and its namespace.
    """
    if live is None:
        return None
    meta = live["metadata"]
    if kind.namespaced:
        uid = str(hda.metadata.get("uid", ""))
        if any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
            return None
    else:
        labels = meta.get("labels") or {}
        if (
            labels.get(LABEL_ACCELERATOR) == label_value(hda.name)
            and labels.get(LABEL_NAMESPACE) == hda.namespace
        ):
            return None
    return f"{live.get('kind', kind.kind)}/{meta['name']} exists and {CONFLICT_MARKER}; rename or delete it"
