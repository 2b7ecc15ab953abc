"""Stream lag, pending, dead letters and rates of one HDA's Valkey.

`measure_streams` reads every partition of every stream in one pipelined round trip (XLEN of the
input and dead-letter keys, XINFO GROUPS of the input and output keys) and turns two successive
samples into `StreamLag`s with pure arithmetic (`stream_lags`).

Definitions, per logical stream (summed over its partitions), for the workers' consumer group:

- `lag`: XINFO GROUPS `lag` (entries not yet delivered); None when any partition's is NULL
  (after XDEL or a trim between last-delivered and the end), or the group is missing.
- `pending`: XINFO GROUPS `pending` (delivered, not acknowledged).
- `ingest_rate`: entries added per second between two samples, from the stream's `entries-added`
  counter. The group tells it without XINFO STREAM (whose reply carries the first and last
  entries, up to 4 MiB each): `entries-added = entries-read + lag`, which is how the server
  computes the lag. Only a partition where either is NULL costs a second round trip, to
  XINFO STREAM: a lag made NULL by deletions, or a non-empty partition the group has never read
  from (entries-read stays NULL until the first read, so no worker has ever run).
- `process_rate`: entries acknowledged per second: the change of `entries-read - pending`
  (an entry moved to the dead-letter stream is acknowledged too, so it counts).

For the output stream (the workers' results, which output makes durable) the same XINFO GROUPS
of output's consumer group gives `output_lag` and `output_pending`: entries not yet durable. They
are reported next to the input's figures and never feed autoscaling, which scales workers on the
input backlog alone (output replicas do not follow it).

The first sample of a stream, a stream whose partition count changed, an unknown counter, or a
counter that went backwards (a recreated key or group) gives a rate of 0.0. Rates are rounded to
two significant digits: status is written only when it changes, and an idle stream (rate 0.0,
nothing else moving) keeps its status byte-equal, so idle HDAs still cause zero writes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from hda.api.v1alpha1 import Stream
from hda.runtime.codec import dead_letter_key, input_key, output_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP

from .status import StreamLag

# A cluster's client routes each partition's commands to the shard serving its slot.
BufferClient = redis.Redis | RedisCluster

RATE_DIGITS = 2  # significant digits of a reported rate


@dataclasses.dataclass(frozen=True)
class PartitionReading:
    """The raw numbers of one partition (input key) for the workers' group."""

    length: int = 0
    dead_letters: int = 0
    lag: int | None = 0
    pending: int = 0
    entries_read: int | None = 0
    entries_added: int | None = None  # from XINFO STREAM, read only when the group cannot tell
    output_lag: int | None = 0  # output's group on the output key
    output_pending: int = 0

    @property
    def needs_stream_info(self) -> bool:
        return self.entries_read is None or self.lag is None

    @property
    def added(self) -> int | None:
        if self.entries_read is not None and self.lag is not None:
            return self.entries_read + self.lag
        return self.entries_added

    @property
    def acked(self) -> int | None:
        read = self.entries_read
        if read is None and self.lag is not None and self.entries_added is not None:
            read = self.entries_added - self.lag  # a group that has not read yet reports NULL
        return None if read is None else read - self.pending


@dataclasses.dataclass(frozen=True)
class StreamSample:
    """One logical stream at one instant: the reported numbers and the rate counters."""

    name: str
    partitions: int
    length: int
    lag: int | None
    pending: int
    dead_letters: int
    added: int | None
    acked: int | None
    output_lag: int | None = 0
    output_pending: int = 0


@dataclasses.dataclass(frozen=True)
class Sample:
    """Every stream of one HDA at `at` (a monotonic clock, seconds)."""

    at: float
    streams: tuple[StreamSample, ...]

    def stream(self, name: str) -> StreamSample | None:
        return next((s for s in self.streams if s.name == name), None)


def _sum(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def summarise(name: str, readings: Sequence[PartitionReading]) -> StreamSample:
    """Sum the partitions of one stream (pure)."""
    return StreamSample(
        name=name,
        partitions=len(readings),
        length=sum(r.length for r in readings),
        lag=_sum([r.lag for r in readings]),
        pending=sum(r.pending for r in readings),
        dead_letters=sum(r.dead_letters for r in readings),
        added=_sum([r.added for r in readings]),
        acked=_sum([r.acked for r in readings]),
        output_lag=_sum([r.output_lag for r in readings]),
        output_pending=sum(r.output_pending for r in readings),
    )


def significant(value: float, digits: int = RATE_DIGITS) -> float:
    """`value` rounded to `digits` significant digits (0.0 for anything not above zero)."""
    if not value > 0 or math.isinf(value):
        return 0.0
    return float(round(value, digits - 1 - math.floor(math.log10(value))))


def per_second(before: int | None, after: int | None, seconds: float) -> float:
    """The rate of a monotonic counter between two samples; 0.0 when it cannot be known."""
    if before is None or after is None or seconds <= 0 or after < before:
        return 0.0
    return significant((after - before) / seconds)


def stream_lags(current: Sample, previous: Sample | None) -> tuple[StreamLag, ...]:
    """What status reports for `current`, with rates since `previous` (pure)."""
    lags = []
    for now in current.streams:
        ingest_rate = process_rate = 0.0
        before = previous.stream(now.name) if previous is not None else None
        if previous is not None and before is not None and before.partitions == now.partitions:
            seconds = current.at - previous.at
            ingest_rate = per_second(before.added, now.added, seconds)
            process_rate = per_second(before.acked, now.acked, seconds)
        lags.append(
            StreamLag(
                name=now.name,
                lag=now.lag,
                pending=now.pending,
                length=now.length,
                dead_letters=now.dead_letters,
                ingest_rate=ingest_rate,
                process_rate=process_rate,
                output_lag=now.output_lag,
                output_pending=now.output_pending,
            )
        )
    return tuple(lags)


def _group(groups: Any, name: str) -> dict[str, Any] | None:
    for group in groups:
        if group.get("name") in (name, name.encode()):
            return dict(group)
    return None


def _output_reading(groups: Any) -> tuple[int | None, int]:
    """Output's (lag, pending) on one output key; no key yet: nothing to make durable."""
    if isinstance(groups, ResponseError) and "no such key" in str(groups).lower():
        return 0, 0
    if isinstance(groups, Exception):
        raise groups
    group = _group(groups, OUTPUT_GROUP)
    if group is None:
        return None, 0
    return _optional_int(group.get("lag")), int(group.get("pending") or 0)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _reading(length: Any, dead: Any, groups: Any) -> PartitionReading:
    for reply in (length, dead):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(groups, ResponseError) and "no such key" in str(groups).lower():
        return PartitionReading(length=int(length), dead_letters=int(dead))  # nothing added yet
    if isinstance(groups, Exception):
        raise groups
    group = _group(groups, WORKER_GROUP)
    if group is None:  # the key exists, but not the group: nothing is known about delivery
        return PartitionReading(
            length=int(length), dead_letters=int(dead), lag=None, entries_read=None
        )
    lag = _optional_int(group.get("lag"))
    entries_read = _optional_int(group.get("entries-read"))
    if entries_read is None and lag == 0 and int(length) == 0:
        # A group reports entries-read NULL until its first read; on an empty partition that
        # means nothing was ever added (unless everything was XDELed before any read).
        entries_read = 0
    return PartitionReading(
        length=int(length),
        dead_letters=int(dead),
        lag=lag,
        pending=int(group.get("pending") or 0),
        entries_read=entries_read,
    )


async def sample_streams(client: BufferClient, streams: Sequence[Stream], now: float) -> Sample:
    """Read every partition in one round trip (plus one for the rare NULL counters)."""
    keys = [(s.name, p) for s in streams for p in range(s.partitions)]
    pipe = client.pipeline(transaction=False)
    for stream, partition in keys:
        pipe.xlen(input_key(stream, partition))
        pipe.xlen(dead_letter_key(stream, partition))
        pipe.xinfo_groups(input_key(stream, partition))
        pipe.xinfo_groups(output_key(stream, partition))
    replies = await pipe.execute(raise_on_error=False)
    readings = {}
    for i, key in enumerate(keys):
        length, dead, groups, output_groups = replies[4 * i : 4 * i + 4]
        output_lag, output_pending = _output_reading(output_groups)
        readings[key] = dataclasses.replace(
            _reading(length, dead, groups), output_lag=output_lag, output_pending=output_pending
        )

    unknown = [key for key, reading in readings.items() if reading.needs_stream_info]
    if unknown:
        pipe = client.pipeline(transaction=False)
        for stream, partition in unknown:
            pipe.xinfo_stream(input_key(stream, partition))
        for key, info in zip(unknown, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, ResponseError) and "no such key" in str(info).lower():
                added = 0
            elif isinstance(info, Exception):
                raise info
            else:
                added = int(info["entries-added"])
            readings[key] = dataclasses.replace(readings[key], entries_added=added)

    return Sample(
        at=now,
        streams=tuple(
            summarise(s.name, [readings[(s.name, p)] for p in range(s.partitions)]) for s in streams
        ),
    )


async def measure_streams(
    client: BufferClient, streams: Sequence[Stream], previous: Sample | None, now: float
) -> tuple[Sample, tuple[StreamLag, ...]]:
    """Sample `streams` now; the sample (keep it for the next call) and what status reports."""
    sample = await sample_streams(client, streams, now)
    return sample, stream_lags(sample, previous)
