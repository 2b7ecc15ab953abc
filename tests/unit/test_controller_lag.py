"""Lag and rate arithmetic of the operator's lag probe (pure parts of hda.controller.lag)."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hda.controller.lag import (
    PartitionReading,
    Sample,
    StreamSample,
    per_second,
    significant,
    stream_lags,
    summarise,
)
from hda.controller.observe import lag_from_status
from hda.controller.status import (
    Lag,
    Observation,
    StreamLag,
    Workload,
    compute_status,
    status_patch,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def healthy(lag: Lag) -> Observation:
    return Observation(generation=1, workers=Workload("w", True, 1, 1, 1, 1, True), lag=lag)


def sample(
    at: float, added: int | None, acked: int | None, *, partitions: int = 2, name: str = "events"
) -> Sample:
    stream = StreamSample(
        name=name,
        partitions=partitions,
        length=10,
        lag=3,
        pending=1,
        dead_letters=2,
        added=added,
        acked=acked,
    )
    return Sample(at=at, streams=(stream,))


def test_counters_come_from_the_group_when_it_knows_them() -> None:
    reading = PartitionReading(length=9, lag=3, pending=2, entries_read=7)
    assert not reading.needs_stream_info
    assert reading.added == 10  # entries-added = entries-read + lag
    assert reading.acked == 5  # entries-read - pending


def test_a_group_that_has_not_read_yet_needs_xinfo_stream() -> None:
    # A group created at 0 reports entries-read NULL until its first read.
    reading = PartitionReading(length=5, lag=5, entries_read=None)
    assert reading.needs_stream_info
    assert reading.added is None
    assert reading.acked is None
    known = PartitionReading(length=5, lag=5, entries_read=None, entries_added=5)
    assert known.added == 5
    assert known.acked == 0


def test_a_null_lag_keeps_acked_from_entries_read() -> None:
    reading = PartitionReading(length=3, lag=None, pending=1, entries_read=2, entries_added=5)
    assert reading.needs_stream_info
    assert reading.added == 5
    assert reading.acked == 1


def test_partitions_sum_and_one_null_makes_the_stream_unknown() -> None:
    readings = [
        PartitionReading(length=4, dead_letters=1, lag=2, pending=1, entries_read=3),
        PartitionReading(
            length=6, dead_letters=0, lag=None, pending=2, entries_read=4, entries_added=7
        ),
    ]
    assert summarise("events", readings) == StreamSample(
        name="events",
        partitions=2,
        length=10,
        lag=None,
        pending=3,
        dead_letters=1,
        added=5 + 7,
        acked=2 + 2,
    )
    assert summarise("events", readings[:1]).lag == 2


def test_rates_from_two_samples() -> None:
    first = sample(100.0, added=1_000, acked=400)
    assert stream_lags(first, None) == (
        StreamLag("events", lag=3, pending=1, length=10, dead_letters=2),
    )
    second = sample(115.0, added=1_150, acked=430)
    [lag] = stream_lags(second, first)
    assert lag.ingest_rate == 10.0
    assert lag.process_rate == 2.0
    [idle] = stream_lags(sample(130.0, added=1_150, acked=430), second)
    assert (idle.ingest_rate, idle.process_rate) == (0.0, 0.0)


def test_rates_are_zero_when_they_cannot_be_known() -> None:
    before = sample(0.0, added=10, acked=10)
    assert per_second(10, 5, 1.0) == 0.0  # a recreated key or group: counter went backwards
    assert per_second(None, 5, 1.0) == 0.0
    assert per_second(1, None, 1.0) == 0.0
    assert per_second(1, 5, 0.0) == 0.0
    [lag] = stream_lags(sample(10.0, added=None, acked=20), before)
    assert (lag.ingest_rate, lag.process_rate) == (0.0, 1.0)
    [grown] = stream_lags(sample(10.0, added=50, acked=50, partitions=3), before)
    assert (grown.ingest_rate, grown.process_rate) == (0.0, 0.0)
    [new] = stream_lags(sample(10.0, added=50, acked=50, name="other"), before)
    assert (new.ingest_rate, new.process_rate) == (0.0, 0.0)


def test_rates_have_two_significant_digits() -> None:
    assert per_second(0, 50, 15.0) == 3.3
    assert per_second(0, 1, 15.0) == 0.067
    assert per_second(0, 123_456, 1.0) == 120_000.0
    assert significant(0.0) == 0.0
    assert significant(-1.0) == 0.0
    assert significant(math.inf) == 0.0
    assert significant(math.nan) == 0.0


@given(st.floats(min_value=1e-9, max_value=1e12))
def test_rounding_is_close_and_stable(value: float) -> None:
    rounded = significant(value)
    assert abs(rounded - value) <= 0.05 * value + 1e-12
    assert significant(rounded) == rounded


def test_rates_reach_status_and_read_back_unchanged() -> None:
    lag = Lag(
        streams=(
            StreamLag(
                "events",
                lag=3,
                pending=4,
                length=9,
                dead_letters=1,
                ingest_rate=3.3,
                process_rate=120_000.0,
                output_lag=6,
                output_pending=2,
            ),
        )
    )
    status, _ = compute_status(healthy(lag=lag), None, T0)
    assert status["streams"] == [
        {
            "name": "events",
            "lag": 3,
            "pending": 4,
            "length": 9,
            "ingestRate": 3.3,
            "processRate": 120_000.0,
            "deadLetters": 1,
            "outputLag": 6,
            "outputPending": 2,
        }
    ]
    again, transitions = compute_status(healthy(lag=lag_from_status(status)), status, T1)
    assert again == status
    assert transitions == []


def test_an_idle_stream_writes_nothing_even_after_a_json_round_trip() -> None:
    """Idle: rates 0.0 and unchanged counters give the same status, and the apiserver giving
    the numbers back as integers (`0`, `120000`) is no difference."""
    idle = Lag(streams=(StreamLag("events", lag=0, pending=0, length=7, dead_letters=1),))
    status, _ = compute_status(healthy(lag=idle), None, T0)
    live = orjson.loads(orjson.dumps(status).replace(b".0,", b",").replace(b".0}", b"}"))
    assert live["streams"][0]["ingestRate"] == 0
    assert isinstance(live["streams"][0]["ingestRate"], int)
    again, _ = compute_status(healthy(lag=idle), live, T1)
    assert status_patch(again, live) is None


def test_output_backlog_is_reported_apart_and_never_in_the_workers_lag() -> None:
    """totalLag (what autoscaling reads) is the input's; the output stream's entries not yet
    durable are per stream and in totalOutputBacklog."""
    lag = Lag(
        streams=(
            StreamLag("events", lag=3, pending=4, length=9, output_lag=10, output_pending=5),
            StreamLag("logs", lag=None, pending=1, length=1, output_lag=None, output_pending=2),
        )
    )
    assert lag.total == 8
    assert lag.total_output == 17
    status, _ = compute_status(healthy(lag=lag), None, T0)
    assert status["totalLag"] == 8
    assert status["totalOutputBacklog"] == 17
    assert [s.get("outputLag") for s in status["streams"]] == [10, None]


def test_output_lag_and_pending_sum_over_partitions() -> None:
    readings = [
        PartitionReading(length=1, output_lag=4, output_pending=1),
        PartitionReading(length=1, output_lag=2, output_pending=3),
    ]
    summed = summarise("events", readings)
    assert (summed.output_lag, summed.output_pending) == (6, 4)
    unknown = summarise("events", [*readings, PartitionReading(output_lag=None)])
    assert unknown.output_lag is None  # one trimmed partition makes the sum unknown
