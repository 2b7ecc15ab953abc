"""Output: the StatefulSet on Fibre Channel nodes that writes segment files and serves subscribers."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from hda.api.consts import FC_NODE_LABEL

from .common import PvcRetentionPolicy, ResourceRequirements
from .types import ApiModel, Duration, ObjectName, Quantity, StringMap, cel, cel_rules


class FibreChannelVolume(ApiModel):
    """One LUN in the inventory: either `wwids`, or `targetWWNs` with `lun`."""

    model_config = cel_rules(
        cel(
            "has(self.wwids) != (has(self.targetWWNs) || has(self.lun))",
            "set either wwids, or targetWWNs with lun, but not both",
        ),
        cel(
            "has(self.targetWWNs) == has(self.lun)",
            "targetWWNs and lun must be set together",
            field_path=".lun",
        ),
    )

    wwids: (
        Annotated[
            list[
                Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z._:-]+$")]
            ],
            Field(min_length=1, max_length=16),
        ]
        | None
    ) = Field(default=None, description="World Wide Identifiers of the LUN (preferred).")
    target_wwns: (
        Annotated[
            list[Annotated[str, Field(pattern=r"^(0x)?[0-9a-fA-F]{16}$", max_length=18)]],
            Field(min_length=1, max_length=16),
        ]
        | None
    ) = Field(
        default=None, alias="targetWWNs", description="Target World Wide Names (16 hex digits)."
    )
    lun: int | None = Field(
        default=None, ge=0, le=16383, description="LUN number, with targetWWNs."
    )
    node_names: Annotated[list[ObjectName], Field(max_length=64)] | None = Field(
        default=None, description="Nodes zoned to this LUN; any FC node if unset."
    )

    @model_validator(mode="after")
    def _one_addressing_mode(self) -> Self:
        by_wwn = self.target_wwns is not None or self.lun is not None
        if (self.wwids is not None) == by_wwn:
            raise ValueError("set either wwids, or targetWWNs with lun, but not both")
        if (self.target_wwns is None) != (self.lun is None):
            raise ValueError("targetWWNs and lun must be set together")
        return self


DEFAULT_FC_NODE_SELECTOR = {FC_NODE_LABEL: "true"}


class FibreChannelSpec(ApiModel):
    """Where output pods run and what they store on."""

    # The output StatefulSet's claim template and the data on the LUNs depend on these.
    model_config = cel_rules(
        cel(
            "!has(self.storageClassName) || !has(oldSelf.storageClassName) || self.storageClassName == oldSelf.storageClassName",
            "storageClassName is immutable: the output volume claims cannot change",
            field_path=".storageClassName",
            reason="FieldValueForbidden",
        ),
        cel(
            "!has(self.size) || !has(oldSelf.size) || self.size == oldSelf.size",
            "size is immutable: resize the output PersistentVolumeClaims themselves",
            field_path=".size",
            reason="FieldValueForbidden",
        ),
        cel(
            "!has(self.fsType) || !has(oldSelf.fsType) || self.fsType == oldSelf.fsType",
            "fsType is immutable: changing it after formatting loses data",
            field_path=".fsType",
            reason="FieldValueForbidden",
        ),
    )

    node_selector: StringMap = Field(
        default_factory=lambda: dict(DEFAULT_FC_NODE_SELECTOR),
        json_schema_extra={"default": {FC_NODE_LABEL: "true"}},
        description=(
            "Labels of Fibre Channel attached nodes. With Node Feature Discovery use "
            "{feature.node.kubernetes.io/pci-0c04.present: 'true'} (needs an NFD rule for class 0c04)."
        ),
    )
    storage_class_name: ObjectName = Field(
        default="hda-fibre-channel",
        description="StorageClass of the output claims (a no-provisioner, WaitForFirstConsumer class for static FC volumes).",
    )
    size: Quantity = Field(default="100Gi", description="Capacity of each output volume.")
    fs_type: Literal["ext4", "xfs"] = Field(default="ext4", description="Filesystem on the LUN.")
    volumes: Annotated[list[FibreChannelVolume], Field(max_length=64)] | None = Field(
        default=None,
        description=(
            "A LUN inventory. When set, the operator creates one static FC PersistentVolume per "
            "entry, labelled for this HDA, and releases it when the HDA is deleted."
        ),
    )


class SegmentRetention(ApiModel):
    """When output deletes old segment files (never the one being written, nor one a subscriber
    is reading history from)."""

    max_age: Duration | None = Field(
        default="168h", description="Delete a segment this long after its last write (7 days)."
    )
    max_total_bytes: Quantity | None = Field(
        default=None,
        description="Delete oldest segments while the volume's segments exceed this "
        "(default: 75% of the volume's capacity, below the 85% disk alert).",
    )


class SegmentFilesSink(ApiModel):
    """Durable segment files on the output volume."""

    max_segment_bytes: Quantity = Field(
        default="256Mi", description="Rotate a segment at this size."
    )
    max_segment_age: Duration = Field(
        default="10m", description="Rotate a segment after this long."
    )
    retention: SegmentRetention = Field(
        default_factory=SegmentRetention,
        description="Age and total-size limits of the segment files.",
        json_schema_extra={"default": {}},
    )


class SubscribersSink(ApiModel):
    """Live WebSocket subscribers with resume by stream ID."""

    enabled: bool = Field(default=True, description="Serve /v1/streams/NAME/subscribe.")
    max_buffered_entries: int = Field(
        default=10_000,
        ge=1,
        description="Entries queued for one subscriber before it is disconnected as too slow.",
    )


class OutputSinks(ApiModel):
    """What output does with processed events."""

    segment_files: SegmentFilesSink = Field(
        default_factory=SegmentFilesSink,
        description="Segment files (always on: they are the durable record).",
        json_schema_extra={"default": {}},
    )
    subscribers: SubscribersSink = Field(
        default_factory=SubscribersSink,
        description="Live WebSocket subscribers.",
        json_schema_extra={"default": {}},
    )


class OutputSpec(ApiModel):
    """The output StatefulSet on Fibre Channel nodes."""

    model_config = cel_rules(
        cel(
            "!has(self.fibreChannel) || !has(self.fibreChannel.volumes) || !has(self.replicas) "
            "|| size(self.fibreChannel.volumes) >= self.replicas",
            "the LUN inventory needs at least one volume per output replica",
            field_path=".fibreChannel.volumes",
        ),
    )

    replicas: int = Field(default=2, ge=0, le=64, description="Output pods, one FC volume each.")
    fibre_channel: FibreChannelSpec = Field(
        default_factory=FibreChannelSpec,
        description="FC node placement and storage.",
        json_schema_extra={"default": {}},
    )
    pvc_retention_policy: PvcRetentionPolicy = Field(
        default_factory=PvcRetentionPolicy,
        description="Fate of the output claims on delete and scale-down.",
        json_schema_extra={"default": {}},
    )
    sinks: OutputSinks = Field(
        default_factory=OutputSinks,
        description="Segment files and live subscribers.",
        json_schema_extra={"default": {}},
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Output container resources (defaults: 250m/256Mi requests)."
    )

    @model_validator(mode="after")
    def _enough_volumes(self) -> Self:
        volumes = self.fibre_channel.volumes
        if volumes is not None and len(volumes) < self.replicas:
            raise ValueError(
                f"fibreChannel.volumes lists {len(volumes)} LUNs for {self.replicas} replicas: "
                "the LUN inventory needs at least one volume per output replica"
            )
        return self
