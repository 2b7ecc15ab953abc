"""1,000,000 events through REST and WebSocket while workers and output are SIGKILLed at random
moments and restarted: afterwards every event is in the output files exactly once."""

from __future__ import annotations

import asyncio
import collections
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import Processes, group_idle, read_output_events, wait_for

from hda.runtime.codec import input_key, output_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.local import Component
from hda.runtime.resp import RedisAddress, RespConnection

pytestmark = [pytest.mark.runtime, pytest.mark.chaos]

TOTAL_EVENTS = 1_000_000
EVENTS_PER_BATCH = 1000
PARTITIONS = 4
NDJSON = {"Content-Type": "application/x-ndjson"}


def batch_body(producer: str, first: int) -> bytes:
    return b"\n".join(
        b'{"p":"%s","s":%d}' % (producer.encode(), s)
        for s in range(first, first + EVENTS_PER_BATCH)
    )


async def rest_producer(session: aiohttp.ClientSession, url: str, name: str, count: int) -> None:
    for first in range(0, count, EVENTS_PER_BATCH):
        body = batch_body(name, first)
        while True:  # 429 is backpressure: the same batch again, later
            async with session.post(url, data=body, headers=NDJSON) as response:
                await response.read()
                if response.status == 202:
                    break
                assert response.status == 429, await response.text()
            await asyncio.sleep(0.1)


async def websocket_producer(
    session: aiohttp.ClientSession, url: str, name: str, count: int
) -> None:
    ws = await session.ws_connect(url)
    window = 16  # frames in flight; the server's flow control bounds it as well
    sent = acked = 0
    batches = list(range(0, count, EVENTS_PER_BATCH))
    while acked < len(batches):
        while sent < len(batches) and sent - acked < window:
            await ws.send_bytes(batch_body(name, batches[sent]))
            sent += 1
        ack = orjson.loads((await ws.receive(timeout=120)).data)
        assert "error" not in ack, ack
        acked += 1
    await ws.close()


async def chaos_monkey(
    victims: list[Component],
    replace_worker: Callable[[str], Component],
    stop: asyncio.Event,
    rng: random.Random,
    kills: collections.Counter[str],
) -> None:
    """Rounds in random order, so every victim dies in every round, at a random moment. A killed
    worker comes back either under its own name (a container restarted in its pod: it re-reads
    its own pending entries) or under a new one (a replacement pod: the others must XAUTOCLAIM
    what the dead consumer held)."""
    while not stop.is_set():
        for slot in rng.sample(range(len(victims)), len(victims)):
            victim = victims[slot]
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            victim.kill()  # SIGKILL, reaped
            role = "output" if victim.name.startswith("output") else "worker"
            kills[role] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            if role == "worker" and rng.random() < 0.5:
                victims[slot] = replace_worker(f"{victim.name.split('~')[0]}~{kills[role]}")
                kills["replaced"] += 1
            else:
                victim.start()


async def test_a_million_events_exactly_once_through_sigkills(
    valkey: EmbeddedValkey, processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    seed = int(os.environ.get("HDA_CHAOS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    manifest = write_manifest(
        f"    - {{name: events, partitions: {PARTITIONS}}}\n",
        "  workers:\n    batchSize: 16\n",
    )
    port = processes.ingest(manifest)
    workers = [processes.worker(manifest, f"worker-{i}", "--claim-idle", "2") for i in range(2)]
    output, _ = processes.output(manifest, tmp_path / "data")
    kills: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    monkey = asyncio.create_task(
        chaos_monkey(
            [*workers, output],
            lambda name: processes.worker(manifest, name, "--claim-idle", "2"),
            stop,
            rng,
            kills,
        )
    )
    base = f"http://127.0.0.1:{port}/v1/streams/events"
    half = TOTAL_EVENTS // 2
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(
            rest_producer(session, f"{base}/events", "rest-a", half // 2),
            rest_producer(session, f"{base}/events", "rest-b", half // 2),
            websocket_producer(session, f"{base}/ws", "ws", half),
        )
    kills_while_producing = sum(kills.values())
    redis = await RespConnection.connect(RedisAddress(port=valkey.port))
    inputs = [input_key("events", p) for p in range(PARTITIONS)]
    outputs = [output_key("events", p) for p in range(PARTITIONS)]
    # Keep killing while the backlog drains, then let the survivors finish.
    await wait_for(lambda: sum(kills.values()) >= 6, within=120)
    stop.set()
    await monkey
    await wait_for(lambda: group_idle(redis, inputs, WORKER_GROUP), within=300)
    await wait_for(lambda: group_idle(redis, outputs, OUTPUT_GROUP), within=300)
    redis.close()
    processes.stop_all()

    events, record_ids = read_output_events(tmp_path / "data" / "events")
    seen = collections.Counter((e["p"], e["s"]) for e in events)
    duplicates = [key for key, n in seen.items() if n > 1]
    assert not duplicates, f"seed {seed}: {len(duplicates)} duplicated, e.g. {duplicates[:3]}"
    assert len(record_ids) == len(set(record_ids)), f"seed {seed}: a record was written twice"
    for producer, count in (("rest-a", half // 2), ("rest-b", half // 2), ("ws", half)):
        missing = [s for s in range(count) if (producer, s) not in seen]
        assert not missing, f"seed {seed}: {producer} lost {len(missing)}, e.g. {missing[:3]}"
    assert len(events) == TOTAL_EVENTS
    assert kills["output"] >= 2, kills
    assert kills["worker"] >= 4, kills
    assert kills_while_producing >= 1, kills_while_producing
