"""Release an HDA's FC PersistentVolumes when it is deleted (the finalizer's work).

Never blocks long: PVs whose claim is retained stay (they hold that claim's data); the rest
are deleted.
"""

from __future__ import annotations

import logging

import kopf

from .kube import Kube, kind_of
from .observe import Cache
from .state import Key, Stats, log_fields

log = logging.getLogger("hda.controller")


async def release_volumes(
    kube: Kube, body: kopf.Body, cache: Cache, key: Key, stats: Stats
) -> None:
    retention = (
        ((body.get("spec") or {}).get("output") or {}).get("pvcRetentionPolicy") or {}
    ).get("whenDeleted", "Retain")
    pv_kind = kind_of({"apiVersion": "v1", "kind": "PersistentVolume"})
    pvc_kind = kind_of({"apiVersion": "v1", "kind": "PersistentVolumeClaim"})
    claims = {str(c["metadata"]["name"]) for c in cache.children(pvc_kind, key[0], key[1])}
    for pv in cache.children(pv_kind, key[0], key[1]):
        name = str(pv["metadata"]["name"])
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        bound = (pv.get("status") or {}).get("phase") == "Bound"
        if retention == "Retain" and bound and ref.get("name") in claims:
            log.info(
                "keeping PersistentVolume of a retained claim",
                extra=log_fields(key, object=f"PersistentVolume/{name}", claim=ref.get("name")),
            )
            continue
        await kube.delete(pv_kind, None, name)
        stats.deletes += 1
        log.info("released", extra=log_fields(key, object=f"PersistentVolume/{name}"))
