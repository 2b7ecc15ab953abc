"""The buffer: the Valkey StatefulSets that hold every stream. Its API field keeps the name
`spec.redis` for compatibility (README, "The buffer")."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from .common import PvcRetentionPolicy, ResourceRequirements
from .types import ApiModel, ImageReference, ObjectName, Quantity, cel, cel_rules


class BufferStorage(ApiModel):
    """The PersistentVolumeClaim that holds Valkey's append-only file."""

    # A StatefulSet's volumeClaimTemplates cannot change, so neither can what they are made of.
    model_config = cel_rules(
        cel(
            "has(self.storageClassName) == has(oldSelf.storageClassName) && "
            "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
            "storageClassName is immutable: the Valkey volume claim cannot change",
            field_path=".storageClassName",
            reason="FieldValueForbidden",
        ),
        cel(
            "!has(self.size) || !has(oldSelf.size) || self.size == oldSelf.size",
            "size is immutable: resize the Valkey PersistentVolumeClaim itself",
            field_path=".size",
            reason="FieldValueForbidden",
        ),
    )

    size: Quantity = Field(default="10Gi", description="Requested capacity of each Valkey volume.")
    storage_class_name: ObjectName | None = Field(
        default=None, description="StorageClass of the Valkey volume; the cluster default if unset."
    )
    pvc_retention_policy: PvcRetentionPolicy = Field(
        default_factory=PvcRetentionPolicy,
        description=(
            "Fate of the Valkey claim (the buffered, not yet processed events) when the HDA is "
            "deleted; independent of spec.output.pvcRetentionPolicy."
        ),
        json_schema_extra={"default": {}},
    )


class BufferPersistence(ApiModel):
    """Valkey AOF durability."""

    append_fsync: Literal["everysec", "always"] = Field(
        default="everysec",
        description=(
            "everysec: fsync once a second (may lose up to one second of acknowledged events "
            "on a node crash); always: fsync before every reply (no loss, slower)."
        ),
    )


class BufferAuth(ApiModel):
    """Where the Valkey password comes from."""

    existing_secret: ObjectName | None = Field(
        default=None,
        description=(
            "A Secret (key `password`) you manage; new content rolls the pods that read it, "
            "and a value ending with a line break is refused. Without it the operator creates "
            "one once and never rotates it."
        ),
    )


Topology = Literal["standalone", "replicated", "cluster"]
Acknowledge = Literal["primary", "fsync", "replica"]
SENTINELS = 3  # a majority survives one lost sentinel
MAX_SHARDS = 64  # the most Valkey StatefulSets a cluster topology may have


class BufferSpec(ApiModel):
    """The Valkey StatefulSet that buffers every stream durably."""

    # Changing the layout of a running buffer would need every stream copied; it is refused.
    model_config = cel_rules(
        cel(
            "self.topology == oldSelf.topology",
            "topology is immutable: create a new HDA with the other topology and move producers",
            field_path=".topology",
            reason="FieldValueForbidden",
        ),
        cel(
            "self.topology != 'standalone' || !has(self.replicas) || self.replicas == 0",
            "replicas needs topology replicated or cluster: standalone is one Valkey pod",
            field_path=".replicas",
        ),
        cel(
            "self.topology != 'replicated' || !has(self.replicas) || self.replicas >= 1",
            "topology replicated needs replicas >= 1",
            field_path=".replicas",
        ),
        cel(
            "self.topology == 'cluster' || !has(self.shards)",
            "shards needs topology cluster",
            field_path=".shards",
        ),
        cel(
            "self.acknowledge != 'replica' || self.topology != 'standalone'",
            "acknowledge replica needs a replica: set topology replicated or cluster",
            field_path=".acknowledge",
        ),
    )

    topology: Topology = Field(
        default="standalone",
        description=(
            "standalone: one Valkey pod. replicated: one primary, `replicas` replicas and 3 "
            "Valkey Sentinels that fail over automatically. cluster: Valkey Cluster of `shards` "
            "shards, each one primary and `replicas` replicas. Immutable."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description=(
            "Replicas per primary. Unset: 0 for standalone, 2 for replicated, 1 for cluster."
        ),
    )
    shards: int | None = Field(
        default=None,
        ge=3,
        le=MAX_SHARDS,
        description=(
            "Primaries of a cluster topology (unset: 3). At least 3, so that a majority of "
            "primaries survives one and can fail it over. Growing adds shards and moves slots "
            "to them; shrinking moves the removed shards' slots off before deleting them "
            "(docs/topologies.md)."
        ),
    )
    acknowledge: Acknowledge = Field(
        default="primary",
        description=(
            "When ingest answers 202 and when a worker acknowledges its input. primary: after "
            "the primary's write. fsync: after the primary's AOF fsync (WAITAOF 1 0). replica: "
            "after the primary's fsync and one replica has the write too (WAITAOF 1 1); a "
            "primary without a connected replica then refuses writes before storing them "
            "(min-replicas-to-write 1), so nothing is written that could not be acknowledged."
        ),
    )

    image: ImageReference | None = Field(
        default=None,
        description=(
            "Pin the Valkey image. Unset: the operator's default Valkey image, which an "
            "operator upgrade may move (the StatefulSet rolls; the AOF volume keeps the data)."
        ),
    )
    storage: BufferStorage = Field(
        default_factory=BufferStorage,
        description="Persistent volume of the Valkey pod.",
        json_schema_extra={"default": {}},
    )
    persistence: BufferPersistence = Field(
        default_factory=BufferPersistence,
        description="AOF durability.",
        json_schema_extra={"default": {}},
    )
    auth: BufferAuth = Field(
        default_factory=BufferAuth,
        description="Password source.",
        json_schema_extra={"default": {}},
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Valkey container resources (defaults: 250m/512Mi requests)."
    )

    @model_validator(mode="after")
    def _topology_fields_agree(self) -> Self:
        if self.topology == "standalone" and self.replicas:
            raise ValueError(
                "replicas needs topology replicated or cluster: standalone is one Valkey pod"
            )
        if self.topology == "replicated" and self.replicas == 0:
            raise ValueError("topology replicated needs replicas >= 1")
        if self.topology != "cluster" and self.shards is not None:
            raise ValueError("shards needs topology cluster")
        if self.acknowledge == "replica" and self.topology == "standalone":
            raise ValueError(
                "acknowledge replica needs a replica: set topology replicated or cluster"
            )
        return self

    @property
    def replica_count(self) -> int:
        """Replicas per primary, with the topology's default filled in."""
        if self.replicas is not None:
            return self.replicas
        return {"standalone": 0, "replicated": 2, "cluster": 1}[self.topology]

    @property
    def min_replicas_to_write(self) -> int:
        """Valkey's min-replicas-to-write: under `replica`, a primary cut off from its replicas
        (or left without one) refuses a write instead of storing what it cannot acknowledge,
        which a failover would then drop or a resend would store twice."""
        return 1 if self.acknowledge == "replica" else 0

    @property
    def shard_count(self) -> int:
        """Primaries: 1 unless the topology is cluster."""
        if self.topology != "cluster":
            return 1
        return 3 if self.shards is None else self.shards
