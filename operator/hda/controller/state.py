"""What names an HDA inside the operator, and what the operator remembers about each one.

The memory is lost on restart by design: everything is recomputed from the cluster (the
autoscaler's history is kept on the workers Deployment for that reason).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from hda.api.consts import LABEL_ACCELERATOR
from hda.specs import LABEL_NAMESPACE
from hda.specs.names import label_value

from .buffer_topology import Resharded
from .scaling import ScalingState

Key = tuple[str, str]  # (namespace, accelerator label value)
# (kind plural, namespace, name) -> (applied hash, monotonic time of the apply)
AppliedMemory = dict[tuple[str, str, str], tuple[str, float]]


def key_of(namespace: str, name: str) -> Key:
    return (namespace, label_value(name))


def child_key(body: Mapping[str, Any]) -> Key | None:
    """The HDA key a labelled child belongs to (PVs name their namespace in a label)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    accelerator = labels.get(LABEL_ACCELERATOR)
    namespace = meta.get("namespace") or labels.get(LABEL_NAMESPACE)
    if not accelerator or not namespace:
        return None
    return (str(namespace), str(accelerator))


def log_fields(key: Key, **extra: Any) -> dict[str, Any]:
    """Structured log fields naming the HDA."""
    return {"hda": f"{key[0]}/{key[1]}", **extra}


@dataclasses.dataclass
class Stats:
    """Counters for the benchmark and the logs."""

    reconciles: int = 0
    reconcile_seconds: float = 0.0
    applies: int = 0
    creates: int = 0
    deletes: int = 0
    status_writes: int = 0


@dataclasses.dataclass
class HdaState:
    """Per-HDA memory."""

    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    scaling: ScalingState | None = None  # None: read it from the workers Deployment
    applied: AppliedMemory = dataclasses.field(default_factory=dict)
    errors: tuple[str, ...] = ()
    secret_errors: tuple[str, ...] = ()
    paused_logged: bool = False
    failures: int = 0
    # StatefulSet -> its last known Valkey primary (buffer_topology.primaries_seen)
    buffer_primaries: dict[str, str] = dataclasses.field(default_factory=dict)
    buffer_activity: str | None = None  # what the operator last did to a replicated/cluster buffer
    reshard_reported: Resharded | None = None  # the last ended resharding told in an Event
    #: The StorageClass of the HDA's Fibre Channel volumes ("" until the first valid spec is
    #: seen): volume events of other classes do not wake it.
    fc_storage_class: str = ""


@dataclasses.dataclass
class Writes:
    """What one reconcile wrote (for the Event and the logs), and what it failed to write."""

    done: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


class NamespaceTerminatingError(Exception):
    """The HDA's namespace is being deleted: nothing is left to restore."""
