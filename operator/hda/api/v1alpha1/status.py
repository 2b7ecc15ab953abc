"""The `status` of a HyperDriveAccelerator: written by the operator only, through /status."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .buffer import Topology
from .types import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed for."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")


class ComponentStatus(ApiModel):
    """Observed replicas of one component."""

    desired_replicas: int = Field(default=0, ge=0, description="Replicas the operator asked for.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas ready now.")


class WorkersStatus(ComponentStatus):
    """Worker replicas, also the scale subresource's view."""

    replicas: int = Field(default=0, ge=0, description="Worker pods that exist (scale status).")
    selector: str = Field(
        default="", max_length=1024, description="Label selector of worker pods (for HPA/KEDA)."
    )


class ComponentsStatus(ApiModel):
    """Per-component replicas."""

    buffer: ComponentStatus = Field(default_factory=ComponentStatus, description="Valkey.")
    ingest: ComponentStatus = Field(default_factory=ComponentStatus, description="Ingest.")
    workers: WorkersStatus = Field(default_factory=WorkersStatus, description="Workers.")
    output: ComponentStatus = Field(default_factory=ComponentStatus, description="Output.")


class StreamStatus(ApiModel):
    """Observed state of one logical stream, summed over its partitions."""

    name: str = Field(max_length=63, description="Stream name.")
    lag: int | None = Field(
        default=None,
        ge=0,
        description="Entries not yet delivered to the workers (unknown after trims).",
    )
    pending: int = Field(default=0, ge=0, description="Entries delivered but not yet acknowledged.")
    length: int = Field(default=0, ge=0, description="Entries currently held in Valkey.")
    ingest_rate: float = Field(default=0.0, ge=0, description="Entries added per second, recently.")
    process_rate: float = Field(
        default=0.0, ge=0, description="Entries acknowledged per second, recently."
    )
    dead_letters: int = Field(default=0, ge=0, description="Entries in the dead-letter stream.")
    output_lag: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Output-stream entries not yet delivered to output (unknown after trims); with "
            "outputPending, what is not yet durable. Autoscaling does not read it."
        ),
    )
    output_pending: int = Field(
        default=0, ge=0, description="Output-stream entries delivered to output, not yet durable."
    )


class Endpoints(ApiModel):
    """Where clients connect."""

    ingest: str | None = Field(
        default=None, max_length=512, description="Ingest base URL inside the cluster."
    )
    subscribe: str | None = Field(
        default=None,
        max_length=512,
        description=(
            "Subscribe base URL (the output ClusterIP Service): any output pod serves the whole "
            "stream at /v1/streams/NAME/subscribe."
        ),
    )
    redis: str | None = Field(
        default=None, max_length=512, description="Valkey address (host:port)."
    )


class ImagesStatus(ApiModel):
    """The images the pipeline runs: the spec's pins, else the operator's defaults."""

    runtime: str | None = Field(
        default=None, max_length=512, description="Image of ingest, workers and output."
    )
    valkey: str | None = Field(default=None, max_length=512, description="Image of Valkey.")


class BufferShardStatus(ApiModel):
    """One Valkey StatefulSet: the replicated set, or one shard of a cluster."""

    name: str = Field(max_length=253, description="The StatefulSet.")
    primary: str | None = Field(
        default=None, max_length=253, description="The pod that is the primary; unset: unknown."
    )
    replicas: int = Field(default=0, ge=0, description="Replica pods the spec asks for.")
    replicas_in_sync: int | None = Field(
        default=None,
        ge=0,
        description="Replicas following the primary over a live link, past their initial sync.",
    )
    slots: int | None = Field(
        default=None, ge=0, le=16384, description="Cluster: hash slots the primary serves."
    )


class BufferStatus(ApiModel):
    """The buffer's topology as the operator last saw it from Valkey and Sentinel."""

    topology: Topology = Field(description="spec.redis.topology.")
    shards: Annotated[list[BufferShardStatus], Field(max_length=64)] = Field(
        default_factory=list,
        description="Per StatefulSet (per shard of a cluster): primary and replicas.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    last_failover_time: str | None = Field(
        default=None,
        description="When the operator last saw a primary change (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    last_reshard_time: str | None = Field(
        default=None,
        description="When the operator's last resharding (slot migration) ended (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    last_reshard: str | None = Field(
        default=None,
        max_length=1024,
        description="What the last resharding moved, or why it failed.",
    )
    reshard_failures: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Reshardings that failed in a row (0 after one succeeds). The next attempt waits "
            "min(15s * 2^(n-1), 10m) after lastReshardTime, unless spec.redis.shards changes."
        ),
    )
    reshard_shards: int | None = Field(
        default=None,
        ge=1,
        description="The spec.redis.shards the last resharding aimed at.",
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="Why the primaries are unknown, or what the operator is doing to the buffer.",
    )


class HyperDriveAcceleratorStatus(ApiModel):
    """Observed state, computed by the operator from what it sees."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the status reflects."
    )
    conditions: Annotated[list[Condition], Field(max_length=32)] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded and per-component conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    components: ComponentsStatus = Field(
        default_factory=ComponentsStatus, description="Per-component replicas."
    )
    workers_ready: str = Field(
        default="0/0", max_length=32, description="Ready/desired workers, for `kubectl get`."
    )
    total_lag: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Undelivered plus pending input entries over all streams: the workers' backlog, "
            "which autoscaling reads."
        ),
    )
    total_output_backlog: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Output-stream entries not yet durable (undelivered plus pending for output) over "
            "all streams. Not part of totalLag, and autoscaling does not read it."
        ),
    )
    streams: Annotated[list[StreamStatus], Field(max_length=64)] = Field(
        default_factory=list,
        description="Per-stream lag, pending and rates.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    endpoints: Endpoints = Field(default_factory=Endpoints, description="Connection addresses.")
    images: ImagesStatus | None = Field(
        default=None,
        description=(
            "Images the pipeline is set to run. When the runtime image changes, the workers "
            "roll first; ingest and output follow once the workers' rollout completed (the "
            "Progressing condition says which are waiting)."
        ),
    )
    redis: BufferStatus | None = Field(
        default=None,
        description="Replicated and cluster topologies: primaries, replicas in sync, failovers.",
    )
