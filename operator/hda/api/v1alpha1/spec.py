"""The `spec` of a HyperDriveAccelerator: the single source of truth for the CRD and the runtime.

Each component's models live in a module of their own; this one assembles them.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from .buffer import BufferSpec
from .common import Templates
from .ingest import IngestSpec
from .observability import ObservabilitySpec
from .otlp import otlp_stream_rules
from .output import OutputSpec
from .streams import Stream
from .types import ApiModel, ImageReference, cel_rules
from .workers import WorkersSpec


class HyperDriveAcceleratorSpec(ApiModel):
    """Desired state of a HyperDriveAccelerator pipeline."""

    model_config = cel_rules(*otlp_stream_rules())

    paused: bool = Field(
        default=False, description="Stop reconciling; everything keeps running as it is."
    )
    image: ImageReference | None = Field(
        default=None,
        description=(
            "Pin the runtime image of ingest, workers and output. Unset: the operator's default "
            "runtime image (its own, unless configured), which moves with operator upgrades "
            "(workers roll first, then ingest and output)."
        ),
    )
    streams: Annotated[list[Stream], Field(min_length=1, max_length=64)] = Field(
        description="Logical streams. Names are unique.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    redis: BufferSpec = Field(
        default_factory=BufferSpec,
        description="The Valkey buffer.",
        # The apiserver checks a default against the CEL rules of its own schema without
        # defaulting inside it first: the rules read topology and acknowledge.
        json_schema_extra={"default": {"topology": "standalone", "acknowledge": "primary"}},
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
    observability: ObservabilitySpec = Field(
        default_factory=ObservabilitySpec,
        description="How the pipeline reports on itself: traces of requests (off by default).",
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
