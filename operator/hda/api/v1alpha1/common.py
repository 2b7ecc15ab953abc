"""Parts every component shares: resources, tolerations, pod overrides and Secret references."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, WithJsonSchema

from .types import ApiModel, ObjectName, Quantity, StringMap


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


class PvcRetentionPolicy(ApiModel):
    """What happens to a StatefulSet's claims (its persistentVolumeClaimRetentionPolicy)."""

    when_deleted: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Claims when the HDA is deleted."
    )
    when_scaled: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Claims of pods removed by a scale-down."
    )
