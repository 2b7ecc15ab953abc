"""Workers: the Deployment that consumes the streams and runs the pipeline."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from .common import ResourceRequirements
from .pipeline import PipelineStep
from .types import ApiModel, Duration, cel, cel_rules


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
        description=(
            "Backlog one worker is expected to absorb, in stream entries (undelivered plus "
            "pending; one entry is one ingest batch of events): the unit of status.totalLag."
        ),
    )
    scale_up_stabilization: Duration = Field(
        default="0s",
        description=(
            "Scale up only to the lowest recommendation of this window: pods are added once the "
            "higher need held for this long (0s: at once). Survives an operator restart."
        ),
    )
    scale_down_stabilization: Duration = Field(
        default="5m",
        description=(
            "Scale down only to the highest recommendation of this window: pods go once the "
            "lower need held for this long. Survives an operator restart."
        ),
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


class DeadLetterRetention(ApiModel):
    """How much of each partition's dead-letter stream Valkey keeps; it has no reader to wait for."""

    max_length: int = Field(
        default=10_000,
        ge=1,
        description="Keep at most this many dead-letter entries per partition (oldest go first).",
    )
    max_age: Duration = Field(
        default="168h", description="Drop dead-letter entries older than this (default 7 days)."
    )


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
    dead_letters: DeadLetterRetention = Field(
        default_factory=DeadLetterRetention,
        description="Retention of the dead-letter streams (length and age per partition).",
        json_schema_extra={"default": {}},
    )
    batch_size: int = Field(
        default=64, ge=1, le=10_000, description="Stream entries read per XREADGROUP call."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Worker container resources (defaults: 250m/256Mi requests)."
    )
