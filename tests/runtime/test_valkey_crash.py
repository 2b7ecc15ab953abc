"""Valkey SIGKILLed under load with `appendfsync always`: no acknowledged event is lost."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.runtime.conftest import (
    AckingProducers,
    Processes,
    group_idle,
    read_output_events,
    wait_for,
)

from hda.runtime.codec import input_key, output_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import RedisAddress, RespConnection

pytestmark = pytest.mark.runtime

PARTITIONS = 2


async def test_valkey_sigkill_loses_no_acknowledged_event(
    valkey: EmbeddedValkey, processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    assert valkey.appendfsync == "always"
    manifest = write_manifest(f"    - {{name: events, partitions: {PARTITIONS}}}\n")
    port = processes.ingest(manifest)
    producers = AckingProducers(f"http://127.0.0.1:{port}/v1/streams/events/events")
    acked, outcomes = producers.acked, producers.outcomes
    async with aiohttp.ClientSession() as session:
        producers.start(session)
        await wait_for(lambda: len(acked) >= 20_000)
        valkey.kill()
        await wait_for(lambda: outcomes["503"] + outcomes["error"] > 0)
        valkey.start()  # same port, same directory: it replays the AOF
        before_restart = len(acked)
        await wait_for(lambda: len(acked) >= before_restart + 20_000)
        await producers.stop()

    redis = await RespConnection.connect(RedisAddress(port=valkey.port))
    processes.worker(manifest)
    processes.output(manifest, tmp_path / "data")
    inputs = [input_key("events", p) for p in range(PARTITIONS)]
    outputs = [output_key("events", p) for p in range(PARTITIONS)]
    await wait_for(lambda: group_idle(redis, inputs, WORKER_GROUP))
    await wait_for(lambda: group_idle(redis, outputs, OUTPUT_GROUP))
    redis.close()
    events, _ = read_output_events(tmp_path / "data" / "events")
    written = collections.Counter(e["seq"] for e in events)
    assert acked - set(written) == set(), "acknowledged events were lost"
    assert max(written.values()) == 1, "an event was written twice"
    assert outcomes["503"] + outcomes["error"] > 0  # the crash really hit the producers
