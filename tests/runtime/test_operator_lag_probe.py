"""The operator's lag probe (`measure_streams`) against a real Valkey fed by the real ingest,
worker and output processes: lag, pending, length, dead letters and rates, and the output
stream's backlog (output's group), with exact numbers.

The clock is passed in (`now`), so rates are exact and no test sleeps for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from tests.runtime.conftest import Processes, group_idle, total_length, wait_for

from hda.api.v1alpha1 import Stream
from hda.controller.lag import Sample, measure_streams
from hda.controller.status import StreamLag
from hda.runtime.codec import input_key, output_key, partition_for_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

# A retention limit keeps consumed entries (without one, workers trim them at once), so the
# length is exact.
STREAMS = (
    "    - {name: events, partitions: 2, partitionKey: k, retention: {maxLength: 1000}}\n"
    "    - {name: quiet, partitions: 1}\n"
)
WORKERS = """  workers:
    maxDeliveries: 2
    pipeline:
      - parseJson: {field: payload}
"""


@pytest.fixture
async def client(valkey: EmbeddedValkey) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis(port=valkey.port)
    yield connection
    await connection.aclose()


class Probe:
    """Successive samples, as `LagProbe` takes them, on a clock the test sets."""

    def __init__(self, client: aioredis.Redis, streams: list[Stream]) -> None:
        self.client = client
        self.streams = streams
        self.previous: Sample | None = None
        self.fallbacks = 0  # XINFO STREAM calls of the last sample

    async def at(self, now: float) -> dict[str, StreamLag]:
        before = await self.xinfo_stream_calls()
        self.previous, lags = await measure_streams(self.client, self.streams, self.previous, now)
        self.fallbacks = await self.xinfo_stream_calls() - before
        return {lag.name: lag for lag in lags}

    async def xinfo_stream_calls(self) -> int:
        """XINFO STREAM replies carry whole entries: the probe uses it only as a fallback."""
        stats = await self.client.info("commandstats")
        return int(stats.get("cmdstat_xinfo|stream", {}).get("calls", 0))


def idle(name: str, lag: int | None, pending: int, length: int, dead: int = 0) -> StreamLag:
    return StreamLag(name, lag=lag, pending=pending, length=length, dead_letters=dead)


async def post(session: aiohttp.ClientSession, port: int, events: list[dict[str, Any]]) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    async with session.post(
        f"http://127.0.0.1:{port}/v1/streams/events/events",
        data=body,
        headers={"Content-Type": "application/x-ndjson"},
    ) as response:
        assert response.status == 202, await response.text()


async def test_lag_pending_dead_letters_and_rates_from_real_processes(
    processes: Processes,
    write_manifest: Any,
    client: aioredis.Redis,
    redis: RespConnection,
    tmp_path: Path,
) -> None:
    manifest: Path = write_manifest(STREAMS, WORKERS)
    spec_streams = [Stream(name="events", partitions=2), Stream(name="quiet", partitions=1)]
    probe = Probe(client, spec_streams)
    port = processes.ingest(manifest)  # creates the consumer groups at ID 0

    # Nothing written yet: all zero, and a first sample has no rates.
    first = await probe.at(100.0)
    assert first == {"events": idle("events", 0, 0, 0), "quiet": idle("quiet", 0, 0, 0)}
    assert probe.fallbacks == 0  # empty partitions: XINFO GROUPS tells everything

    # Six requests through the real ingest, no worker: each request is one entry, all undelivered.
    async with aiohttp.ClientSession() as session:
        for i in range(6):
            key = "a" if i % 2 else "d"
            await post(session, port, [{"k": key, "payload": '{"n":1}'}] * 3)
    events_keys = [input_key("events", p) for p in range(2)]
    assert await total_length(redis, "events", 2) == 6
    added = await probe.at(102.0)
    assert added["events"] == StreamLag(
        "events", lag=6, pending=0, length=6, dead_letters=0, ingest_rate=3.0, process_rate=0.0
    )
    assert added["quiet"] == idle("quiet", 0, 0, 0)
    # The group has never read these partitions (entries-read NULL): XINFO STREAM for each.
    assert probe.fallbacks == 2

    # Nothing moved: rates drop to 0.0, the rest stays.
    assert (await probe.at(104.0))["events"] == idle("events", 6, 0, 6)

    # A consumer takes two entries of one partition and acknowledges one of them; the group
    # has read nothing of the other partition yet (its entries-read is NULL until then).
    partition_a = partition_for_key("a", 2)
    assert partition_for_key("d", 2) != partition_a
    rows = await client.xreadgroup(
        WORKER_GROUP, "ghost", {input_key("events", partition_a): ">"}, count=2
    )
    assert isinstance(rows, list)  # RESP2: [[key, entries]]
    [(_, entries)] = rows
    assert len(entries) == 2
    await client.xack(input_key("events", partition_a), WORKER_GROUP, entries[0][0])
    read = await probe.at(106.0)
    assert read["events"] == StreamLag(
        "events", lag=4, pending=1, length=6, dead_letters=0, ingest_rate=0.0, process_rate=0.5
    )

    # A real worker with a poison event: it reclaims the ghost's entry, processes everything,
    # and dead-letters the one event that fails parseJson after maxDeliveries.
    async with aiohttp.ClientSession() as session:
        await post(
            session, port, [{"k": "a", "payload": '{"n":2}'}, {"k": "a", "payload": "{oops"}]
        )
    processes.worker(manifest, "worker-0", "--claim-idle", "0.2")
    await wait_for(lambda: group_idle(redis, events_keys, WORKER_GROUP))
    processed = await probe.at(116.0)
    # 7 entries, all acknowledged (6 acked since the last sample over 10 s), one dead letter.
    # No output runs: the 6 entries the worker wrote (the ghost acked one unprocessed) are the
    # output's backlog, apart from the workers' lag.
    assert processed["events"] == StreamLag(
        "events",
        lag=0,
        pending=0,
        length=7,
        dead_letters=1,
        ingest_rate=0.1,
        process_rate=0.6,
        output_lag=6,
        output_pending=0,
    )
    assert probe.fallbacks == 0  # every partition read: one round trip, no XINFO STREAM

    # An output consumer takes two output entries without making them durable: pending.
    output_a = output_key("events", partition_a)
    rows = await client.xreadgroup(OUTPUT_GROUP, "ghost", {output_a: ">"}, count=2)
    assert isinstance(rows, list)
    [(_, taken)] = rows
    taken_output = await probe.at(118.0)
    assert (taken_output["events"].output_lag, taken_output["events"].output_pending) == (4, 2)
    assert taken_output["events"].lag == 0  # the workers' lag is untouched
    await client.xack(output_a, OUTPUT_GROUP, *[entry_id for entry_id, _ in taken])

    # The real output makes the rest durable: the output backlog drains to zero.
    processes.output(manifest, tmp_path / "data")
    output_keys = [output_key("events", p) for p in range(2)]
    await wait_for(lambda: group_idle(redis, output_keys, OUTPUT_GROUP))

    # Idle: rates 0.0, and the next sample is identical (so status would not be written again).
    quiet = await probe.at(126.0)
    assert quiet["events"] == idle("events", 0, 0, 7, dead=1)
    assert await probe.at(136.0) == quiet
    assert quiet["quiet"] == idle("quiet", 0, 0, 0)


async def test_missing_keys_a_missing_group_and_a_null_lag(client: aioredis.Redis) -> None:
    """Absent keys count as zeros. A key without the workers' group, or whose group lag is
    NULL (an undelivered entry was deleted), has an unknown lag, while its ingest rate is still
    known (from XINFO STREAM, read for those partitions only)."""
    probe = Probe(client, [Stream(name="events", partitions=2), Stream(name="logs", partitions=1)])
    assert await probe.at(0.0) == {"events": idle("events", 0, 0, 0), "logs": idle("logs", 0, 0, 0)}

    for _ in range(4):
        await client.xadd(input_key("events", 1), {"n": 1, "d": b"{}"})  # no group on this key
    key = input_key("logs", 0)
    await client.xgroup_create(key, WORKER_GROUP, "0", mkstream=True)
    await client.xadd(key, {"n": 1, "d": b"{}"})
    last = await client.xadd(key, {"n": 1, "d": b"{}"})
    await client.xdel(key, last)
    lags = await probe.at(2.0)
    assert lags["events"] == StreamLag(
        "events", lag=None, pending=0, length=4, dead_letters=0, ingest_rate=2.0, process_rate=0.0
    )
    assert lags["logs"] == StreamLag(
        "logs", lag=None, pending=0, length=1, dead_letters=0, ingest_rate=1.0, process_rate=0.0
    )
