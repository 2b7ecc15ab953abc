"""Names of every child of an HDA, bounded to what Kubernetes accepts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from hda.api.v1alpha1 import HyperDriveAccelerator

# StatefulSet pods carry `controller-revision-hash: <sts>-<10 chars>` (a 63-char label value), so
# 52 is the longest StatefulSet name that works; every namespaced child uses the same bound so a
# Service and its StatefulSet share a prefix.
MAX_CHILD_NAME: Final = 52
MAX_OBJECT_NAME: Final = 253  # DNS subdomain, e.g. a cluster-scoped PersistentVolume
MAX_LABEL_VALUE: Final = 63


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bounded(name: str, limit: int) -> str:
    """`name` if it fits, else a prefix plus a hash of the whole name (still unique, stable)."""
    if len(name) <= limit:
        return name
    suffix = _digest(name)
    prefix = name[: limit - len(suffix) - 1].rstrip("-.")
    return f"{prefix}-{suffix}"


def label_value(value: str) -> str:
    """A label value (≤63 chars, alphanumeric at both ends) naming `value`."""
    return bounded(value, MAX_LABEL_VALUE)


def child_name(hda: HyperDriveAccelerator, suffix: str) -> str:
    """`<hda name>-<suffix>`, shortened with a hash when the HDA name is long."""
    return bounded(f"{hda.name}-{suffix}", MAX_CHILD_NAME)


def fc_volume_name(hda: HyperDriveAccelerator, index: int) -> str:
    """Cluster-scoped PV name for LUN `index`: `hda-<namespace>-<name>-<hash>-lun-<i>`.

    Both names may contain hyphens (namespace `a-b` with HDA `c` and namespace `a` with HDA
    `b-c` would read alike), so a hash of `namespace/name` keeps PVs of different HDAs apart.
    """
    owner = _digest(f"{hda.namespace}/{hda.name}", 6)
    suffix = f"-{owner}-lun-{index}"
    prefix = bounded(f"hda-{hda.namespace}-{hda.name}", MAX_OBJECT_NAME - len(suffix))
    return prefix + suffix


# The output StatefulSet's volumeClaimTemplate; its claims are `<template>-<sts>-<ordinal>`.
OUTPUT_DATA_VOLUME: Final = "data"
VALKEY_DATA_VOLUME: Final = "data"
# The primary's name in Sentinel (replicated topology): each HDA has its own sentinels.
VALKEY_MASTER_NAME: Final = "buffer"


def valkey_shard_statefulset(hda: HyperDriveAccelerator, shard: int) -> str:
    """The StatefulSet of shard `shard` (0-based) of a cluster topology: its primary and replicas."""
    return child_name(hda, f"valkey-shard-{shard}")


@dataclass(frozen=True)
class ChildNames:
    """Every object name the operator derives from one HDA."""

    valkey_statefulset: str
    valkey_headless_service: str
    buffer_service: str
    buffer_configmap: str
    buffer_password_secret: str
    buffer_password_secret_is_generated: bool
    valkey_statefulsets: tuple[str, ...]
    """Every Valkey StatefulSet: the one of standalone and replicated, one per cluster shard."""
    valkey_pdb: str
    sentinel_statefulset: str
    sentinel_headless_service: str
    sentinel_service: str
    sentinel_pdb: str
    ingest_deployment: str
    ingest_service: str
    ingest_pdb: str
    workers_deployment: str
    workers_pdb: str
    output_statefulset: str
    output_headless_service: str
    output_service: str
    output_pdb: str
    runtime_configmap: str
    service_account: str
    network_policy: str
    fc_volumes: tuple[str, ...]
    """PersistentVolume names, one per LUN of `spec.output.fibreChannel.volumes` (in order)."""

    def output_claim(self, ordinal: int) -> str:
        """The claim the output StatefulSet creates for pod `ordinal`."""
        return f"{OUTPUT_DATA_VOLUME}-{self.output_statefulset}-{ordinal}"


def child_names(hda: HyperDriveAccelerator) -> ChildNames:
    """All child names of `hda`."""
    redis = hda.spec.redis
    valkey = child_name(hda, "valkey")
    statefulsets = (
        tuple(valkey_shard_statefulset(hda, shard) for shard in range(redis.shard_count))
        if redis.topology == "cluster"
        else (valkey,)
    )
    existing_secret = hda.spec.redis.auth.existing_secret
    volumes = hda.spec.output.fibre_channel.volumes or []
    return ChildNames(
        valkey_statefulset=valkey,
        valkey_headless_service=child_name(hda, "valkey-headless"),
        buffer_service=child_name(hda, "valkey"),
        buffer_configmap=child_name(hda, "valkey-config"),
        buffer_password_secret=existing_secret or child_name(hda, "valkey-password"),
        buffer_password_secret_is_generated=existing_secret is None,
        valkey_statefulsets=statefulsets,
        valkey_pdb=valkey,
        sentinel_statefulset=child_name(hda, "sentinel"),
        sentinel_headless_service=child_name(hda, "sentinel-headless"),
        sentinel_service=child_name(hda, "sentinel"),
        sentinel_pdb=child_name(hda, "sentinel"),
        ingest_deployment=child_name(hda, "ingest"),
        ingest_service=child_name(hda, "ingest"),
        ingest_pdb=child_name(hda, "ingest"),
        workers_deployment=child_name(hda, "workers"),
        workers_pdb=child_name(hda, "workers"),
        output_statefulset=child_name(hda, "output"),
        output_headless_service=child_name(hda, "output-headless"),
        output_service=child_name(hda, "output"),
        output_pdb=child_name(hda, "output"),
        runtime_configmap=child_name(hda, "config"),
        service_account=child_name(hda, "runtime"),
        network_policy=child_name(hda, "valkey"),
        fc_volumes=tuple(fc_volume_name(hda, index) for index in range(len(volumes))),
    )
