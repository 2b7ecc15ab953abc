"""The `spec` of a HyperDriveAccelerator: the single source of truth for the CRD and the runtime."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, JsonValue, WithJsonSchema, field_validator, model_validator

from hda.api.consts import FC_NODE_LABEL

from .otlp import OtlpIngest, otlp_stream_rules
from .types import (
    ApiModel,
    Duration,
    FieldPath,
    ObjectName,
    Quantity,
    StreamName,
    StringMap,
    cel,
    cel_rules,
)

# --- Streams ----------------------------------------------------------------------------------


class Retention(ApiModel):
    """How much of a stream Valkey keeps. Trimming never passes the slowest consumer group."""

    max_length: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many entries per partition (each entry holds a batch of events).",
    )
    max_age: Duration | None = Field(
        default=None,
        description="Drop entries older than this (e.g. 1h), once every consumer group has passed them.",
    )


class Stream(ApiModel):
    """A logical stream of events, spread over `partitions` Valkey stream keys."""

    model_config = cel_rules(
        cel(
            "self.partitions >= oldSelf.partitions",
            "partitions cannot be reduced: events in the removed partitions would be stranded",
            field_path=".partitions",
            reason="FieldValueForbidden",
        ),
    )

    name: StreamName = Field(
        description="Stream name, used in URLs (/v1/streams/NAME/events) and keys."
    )
    partitions: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Number of Valkey stream keys (partitions). Can grow, never shrink.",
    )
    partition_key: FieldPath | None = Field(
        default=None,
        description=(
            "Event field whose value picks the partition by hash, keeping events with the same "
            "key in order. Without it, batches are spread round-robin."
        ),
    )
    retention: Retention = Field(
        default_factory=Retention,
        description="How much of the stream Valkey keeps.",
        json_schema_extra={"default": {}},
    )


# --- Shared component parts -------------------------------------------------------------------


class ResourceRequirements(ApiModel):
    """CPU and memory requests and limits, as in a container's `resources`."""

    requests: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 250m, memory: 256Mi}."
    )
    limits: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Maximum resources, e.g. {cpu: '2', memory: 1Gi}."
    )


class Toleration(ApiModel):
    """A pod toleration, as in a PodSpec."""

    key: str | None = Field(default=None, max_length=317, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal."
    )
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty means all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint."
    )


PreservedObject = Annotated[
    dict[str, JsonValue],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class PodTemplate(ApiModel):
    """Per-component pod overrides."""

    node_selector: StringMap | None = Field(
        default=None, description="Node labels the pods require, merged over the operator's own."
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = Field(
        default=None, description="Tolerations added to the pods."
    )
    affinity: PreservedObject | None = Field(
        default=None, description="A PodSpec `affinity`, used as given (Kubernetes validates it)."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Container resources; replaces the component's defaults."
    )
    labels: StringMap | None = Field(default=None, description="Extra pod labels.")
    annotations: StringMap | None = Field(default=None, description="Extra pod annotations.")
    priority_class_name: ObjectName | None = Field(default=None, description="Pod priority class.")


class Templates(ApiModel):
    """Pod overrides for each component."""

    redis: PodTemplate | None = Field(default=None, description="Overrides for the Valkey pods.")
    ingest: PodTemplate | None = Field(default=None, description="Overrides for the ingest pods.")
    workers: PodTemplate | None = Field(default=None, description="Overrides for the worker pods.")
    output: PodTemplate | None = Field(default=None, description="Overrides for the output pods.")


class SecretKeyRef(ApiModel):
    """A key in a Secret in the HDA's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: str = Field(
        default="token", min_length=1, max_length=253, description="Key within the Secret."
    )


# --- Redis / Valkey ---------------------------------------------------------------------------


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
            "A Secret (key `password`) you manage. Without it the operator creates one once "
            "and never rotates it."
        ),
    )


class RedisSpec(ApiModel):
    """The Valkey StatefulSet that buffers every stream durably."""

    image: str = Field(
        default="valkey/valkey:8.1", min_length=1, max_length=512, description="Valkey image."
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


# --- Ingest -----------------------------------------------------------------------------------


class IngestService(ApiModel):
    """The Service in front of the ingest pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")


class Backpressure(ApiModel):
    """When ingest stops accepting events."""

    max_backlog: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "Events waiting in a stream (undelivered plus pending) above which ingest answers "
            "429 with Retry-After, and WebSocket clients stop being read."
        ),
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, le=3600, description="Retry-After value sent with a 429."
    )


class IngestSpec(ApiModel):
    """The REST and WebSocket ingest Deployment."""

    replicas: int = Field(default=2, ge=0, le=100, description="Ingest pods.")
    service: IngestService = Field(
        default_factory=IngestService,
        description="How ingest is exposed.",
        json_schema_extra={"default": {}},
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest accepted request body or WebSocket frame, in bytes (413 above it).",
    )
    backpressure: Backpressure = Field(
        default_factory=Backpressure,
        description="Backlog watermark for pushing back.",
        json_schema_extra={"default": {}},
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description="A Secret key holding the bearer token producers must send; no auth if unset.",
    )
    otlp: OtlpIngest | None = Field(
        default=None,
        description="OTLP/HTTP ingest: the stream each OpenTelemetry signal is written to.",
    )


# --- Workers ----------------------------------------------------------------------------------


class Autoscaling(ApiModel):
    """Scale workers on stream lag. The operator sets the Deployment's replicas; spec is untouched."""

    model_config = cel_rules(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must be less than or equal to maxReplicas",
            field_path=".minReplicas",
        ),
    )

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest workers.")
    max_replicas: int = Field(default=20, ge=1, le=1000, description="Most workers.")
    target_lag_per_replica: int = Field(
        default=10_000,
        ge=1,
        description="Backlog (undelivered plus pending events) one worker is expected to absorb.",
    )
    scale_up_stabilization: Duration = Field(
        default="0s", description="Highest recommendation over this window is used to scale up."
    )
    scale_down_stabilization: Duration = Field(
        default="5m", description="Scale down only after the lower need held for this long."
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


_PIPELINE_STEP_KINDS = (
    "parseJson",
    "filter",
    "setFields",
    "renameFields",
    "dropFields",
    "redact",
    "sample",
    "countByKey",
)


class ParseJsonStep(ApiModel):
    """Parse a string field holding JSON into an object."""

    field: FieldPath = Field(description="Field holding a JSON string.")
    target: FieldPath | None = Field(
        default=None, description="Where to put the result; in place if unset."
    )


FilterOperator = Literal[
    "eq", "ne", "in", "notIn", "exists", "notExists", "gt", "gte", "lt", "lte", "matches"
]


class FilterStep(ApiModel):
    """Keep only the events whose field satisfies the predicate."""

    model_config = cel_rules(
        cel(
            "self.op in ['exists', 'notExists'] || has(self.value) || has(self.values)",
            "value or values is required for this op",
            field_path=".value",
        ),
    )

    field: FieldPath = Field(description="Field to test.")
    op: FilterOperator = Field(description="Comparison.")
    value: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Operand for eq, ne, gt, gte, lt, lte (numbers compare numerically when both sides "
            "are numbers) and matches (a regular expression)."
        ),
    )
    values: (
        Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=256)] | None
    ) = Field(default=None, description="Operands for in and notIn.")

    @model_validator(mode="after")
    def _operand_present(self) -> Self:
        if self.op in ("in", "notIn") and self.values is None:
            raise ValueError(f"values is required for op {self.op}")
        if self.op not in ("in", "notIn", "exists", "notExists") and self.value is None:
            raise ValueError(f"value is required for op {self.op}")
        if self.op == "matches":
            _compile_pattern(str(self.value))
        return self


class SetFieldsStep(ApiModel):
    """Set fields to constant values."""

    fields: Annotated[dict[str, JsonValue], Field(min_length=1, max_length=64)] = Field(
        description="Field path -> value.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}},
    )


class RenameFieldsStep(ApiModel):
    """Rename fields."""

    fields: Annotated[dict[str, FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Old field path -> new field path."
    )


class DropFieldsStep(ApiModel):
    """Remove fields."""

    fields: Annotated[list[FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Field paths to remove."
    )


class RedactStep(ApiModel):
    """Replace every match of a regular expression in string fields."""

    fields: Annotated[list[FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Fields to scan."
    )
    pattern: str = Field(
        min_length=1, max_length=1024, description="Regular expression (Python syntax)."
    )
    replacement: str = Field(default="[REDACTED]", max_length=256, description="Replacement text.")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        _compile_pattern(pattern)
        return pattern


class SampleStep(ApiModel):
    """Keep a fraction of events, deterministically by key when one is given."""

    rate: float = Field(gt=0, le=1, description="Fraction kept, in (0, 1].")
    key: FieldPath | None = Field(
        default=None,
        description="Hash this field so all events of a key are kept or dropped together.",
    )


class CountByKeyStep(ApiModel):
    """Replace events with counts per key over tumbling windows."""

    key: FieldPath = Field(description="Field to group by.")
    window: Duration = Field(default="10s", description="Tumbling window length.")


class PipelineStep(ApiModel):
    """One processing step: exactly one of the step kinds."""

    model_config = cel_rules(
        cel(
            "[" + ", ".join(f"has(self.{kind})" for kind in _PIPELINE_STEP_KINDS) + "]"
            ".filter(x, x).size() == 1",
            "a pipeline step must set exactly one of: " + ", ".join(_PIPELINE_STEP_KINDS),
        ),
    )

    name: str | None = Field(
        default=None, max_length=63, description="Optional label for logs and metrics."
    )
    parse_json: ParseJsonStep | None = Field(default=None, description="Parse a JSON string field.")
    filter: FilterStep | None = Field(default=None, description="Keep events matching a predicate.")
    set_fields: SetFieldsStep | None = Field(default=None, description="Set constant fields.")
    rename_fields: RenameFieldsStep | None = Field(default=None, description="Rename fields.")
    drop_fields: DropFieldsStep | None = Field(default=None, description="Remove fields.")
    redact: RedactStep | None = Field(default=None, description="Redact by regular expression.")
    sample: SampleStep | None = Field(default=None, description="Keep a fraction of events.")
    count_by_key: CountByKeyStep | None = Field(
        default=None, description="Count per key per window."
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Self:
        chosen = [
            name
            for name in self.model_fields_set
            if name != "name" and getattr(self, name) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "a pipeline step must set exactly one of: " + ", ".join(_PIPELINE_STEP_KINDS)
            )
        return self

    @property
    def kind(self) -> str:
        """The camelCase name of the step kind this entry sets."""
        for field_name, info in type(self).model_fields.items():
            if field_name != "name" and getattr(self, field_name) is not None:
                return info.alias or field_name
        raise AssertionError("validated step has no kind")


class WorkersSpec(ApiModel):
    """The worker Deployment that consumes streams and runs the pipeline."""

    replicas: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Worker pods when autoscaling is off. `kubectl scale hda/NAME` sets this.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Lag-driven scaling; when set, it decides the replica count."
    )
    pipeline: Annotated[list[PipelineStep], Field(max_length=64)] = Field(
        default_factory=list,
        description="Processing steps, applied in order to every event.",
        json_schema_extra={"default": []},
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Deliveries of an entry before it moves to the dead-letter stream.",
    )
    batch_size: int = Field(
        default=64, ge=1, le=10_000, description="Stream entries read per XREADGROUP call."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Worker container resources (defaults: 250m/256Mi requests)."
    )


# --- Output -----------------------------------------------------------------------------------


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


class SegmentFilesSink(ApiModel):
    """Durable segment files on the output volume."""

    max_segment_bytes: Quantity = Field(
        default="256Mi", description="Rotate a segment at this size."
    )
    max_segment_age: Duration = Field(
        default="10m", description="Rotate a segment after this long."
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


class PvcRetentionPolicy(ApiModel):
    """What happens to output claims, as a StatefulSet persistentVolumeClaimRetentionPolicy."""

    when_deleted: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Claims when the HDA is deleted."
    )
    when_scaled: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Claims of pods removed by a scale-down."
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


# --- The spec ---------------------------------------------------------------------------------

DEFAULT_IMAGE = "ghcr.io/shitops/hyperdrive-accelerator:0.1.0"


class HyperDriveAcceleratorSpec(ApiModel):
    """Desired state of a HyperDriveAccelerator pipeline."""

    model_config = cel_rules(*otlp_stream_rules())

    paused: bool = Field(
        default=False, description="Stop reconciling; everything keeps running as it is."
    )
    image: str = Field(
        default=DEFAULT_IMAGE,
        min_length=1,
        max_length=512,
        description="Runtime image for ingest, workers and output.",
    )
    streams: Annotated[list[Stream], Field(min_length=1, max_length=64)] = Field(
        description="Logical streams. Names are unique.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    redis: RedisSpec = Field(
        default_factory=RedisSpec,
        description="The Valkey buffer.",
        json_schema_extra={"default": {}},
    )
    ingest: IngestSpec = Field(
        default_factory=IngestSpec,
        description="REST and WebSocket ingest.",
        json_schema_extra={"default": {}},
    )
    workers: WorkersSpec = Field(
        default_factory=WorkersSpec,
        description="Stream processing workers.",
        json_schema_extra={"default": {}},
    )
    output: OutputSpec = Field(
        default_factory=OutputSpec,
        description="Durable output on Fibre Channel storage.",
        json_schema_extra={"default": {}},
    )
    template: Templates = Field(
        default_factory=Templates,
        description="Per-component pod overrides.",
        json_schema_extra={"default": {}},
    )

    @field_validator("streams")
    @classmethod
    def _unique_stream_names(cls, streams: list[Stream]) -> list[Stream]:
        seen: set[str] = set()
        for index, stream in enumerate(streams):
            if stream.name in seen:
                raise ValueError(f"streams[{index}].name: duplicate stream name {stream.name!r}")
            seen.add(stream.name)
        return streams

    @model_validator(mode="after")
    def _otlp_streams_exist(self) -> Self:
        if self.ingest.otlp is not None:
            for signal, name in self.ingest.otlp.streams().items():
                if self.stream(name) is None:
                    raise ValueError(
                        f"ingest.otlp.{signal}: stream {name!r} is not in spec.streams"
                    )
        return self

    def stream(self, name: str) -> Stream | None:
        """The stream called `name`, if the spec has one."""
        return next((s for s in self.streams if s.name == name), None)


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
