"""The buffer: the Valkey StatefulSet that holds every stream (`spec.redis` in the API)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import PvcRetentionPolicy, ResourceRequirements
from .types import ApiModel, ImageReference, ObjectName, Quantity, cel, cel_rules


class RedisStorage(ApiModel):
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


class RedisPersistence(ApiModel):
    """Valkey AOF durability."""

    append_fsync: Literal["everysec", "always"] = Field(
        default="everysec",
        description=(
            "everysec: fsync once a second (may lose up to one second of acknowledged events "
            "on a node crash); always: fsync before every reply (no loss, slower)."
        ),
    )


class RedisAuth(ApiModel):
    """Where the Valkey password comes from."""

    existing_secret: ObjectName | None = Field(
        default=None,
        description=(
            "A Secret (key `password`) you manage; new content rolls the pods that read it, "
            "and a value ending with a line break is refused. Without it the operator creates "
            "one once and never rotates it."
        ),
    )


class RedisSpec(ApiModel):
    """The Valkey StatefulSet that buffers every stream durably."""

    image: ImageReference | None = Field(
        default=None,
        description=(
            "Pin the Valkey image. Unset: the operator's default Valkey image, which an "
            "operator upgrade may move (the StatefulSet rolls; the AOF volume keeps the data)."
        ),
    )
    storage: RedisStorage = Field(
        default_factory=RedisStorage,
        description="Persistent volume of the Valkey pod.",
        json_schema_extra={"default": {}},
    )
    persistence: RedisPersistence = Field(
        default_factory=RedisPersistence,
        description="AOF durability.",
        json_schema_extra={"default": {}},
    )
    auth: RedisAuth = Field(
        default_factory=RedisAuth,
        description="Password source.",
        json_schema_extra={"default": {}},
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Valkey container resources (defaults: 250m/512Mi requests)."
    )
