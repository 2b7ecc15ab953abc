"""Streams: the logical event streams of an HDA and how much of each Valkey keeps."""

from __future__ import annotations

from pydantic import Field

from .types import ApiModel, Duration, FieldPath, StreamName, cel, cel_rules


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
