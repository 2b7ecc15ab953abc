"""Write an HDA's status through /status, and only when it changed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from . import events
from .kube import ApiError, Kube
from .state import Key, Stats, log_fields
from .status import Observation, compute_status, status_patch

log = logging.getLogger("hda.controller")


async def write_status(  # noqa: PLR0917
    kube: Kube,
    body: kopf.Body,
    raw: dict[str, Any],
    key: Key,
    obs: Observation,
    stats: Stats,
) -> None:
    """Compute the status from `obs`; patch it (and post transition Events) if it differs."""
    live_status = raw.get("status") or {}
    status, transitions = compute_status(obs, live_status, rfc3339_now())
    patch = status_patch(status, live_status)
    if patch is None:
        return
    meta = raw["metadata"]
    try:
        await kube.patch_status(meta["namespace"], meta["name"], patch)
    except ApiError as error:
        if error.status == 404:
            return
        raise
    stats.status_writes += 1
    log.info(
        "status written",
        extra=log_fields(key, transitions=len(transitions), changed=_changed(status, live_status)),
    )
    events.transitions(body, transitions)


def rfc3339_now() -> str:
    """Now, as status timestamps are written (RFC 3339, UTC, seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _changed(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Which parts of the status differ: condition types and other top-level fields."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    changed = [str(c["type"]) for c in new.get("conditions") or [] if before.get(c["type"]) != c]
    changed += [
        k for k in sorted(set(new) | set(old)) if k != "conditions" and new.get(k) != old.get(k)
    ]
    return changed
