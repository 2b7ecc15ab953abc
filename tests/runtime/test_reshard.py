"""Resharding 3 -> 4 shards under load with atomic slot migration: partitions move to the new
shard while ingest, a worker and output run, and no acknowledged event is lost or duplicated."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot
from tests.runtime.conftest import (
    AckingProducers,
    Processes,
    read_output_events,
    wait_for,
    wait_until_drained,
)

from hda.runtime.codec import input_key
from hda.runtime.topology.local import ClusterValkey
from hda.runtime.topology.reshard import ReshardProgress, cluster_nodes, reshard

pytestmark = pytest.mark.runtime
log = logging.getLogger(__name__)

PARTITIONS = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterValkey]:
    topology = ClusterValkey(tmp_path / "valkey", shards=3, replicas=1, appendfsync="always")
    topology.start()
    yield topology
    topology.kill()


async def test_resharding_3_to_4_under_load_loses_and_duplicates_nothing(
    cluster: ClusterValkey, tmp_path: Path, write_manifest: Any
) -> None:
    manifest = write_manifest(
        f"    - {{name: events, partitions: {PARTITIONS}}}\n",
        "  redis: {topology: cluster, shards: 3, replicas: 1, acknowledge: replica}\n",
    )
    processes = Processes(tmp_path, cluster)
    try:
        port = processes.ingest(manifest)
        processes.worker(manifest)
        processes.output(manifest, tmp_path / "data")
        producers = AckingProducers(f"http://127.0.0.1:{port}/v1/streams/events/events")
        acked = producers.acked
        async with aiohttp.ClientSession() as session:
            producers.start(session)
            await wait_for(lambda: len(acked) >= 5_000)
            new_shard = await asyncio.to_thread(cluster.add_shard)
            seed = ("127.0.0.1", cluster.shards[0].primary.port)
            started = time.monotonic()
            moves = await reshard(seed)
            reshard_seconds = time.monotonic() - started
            at_reshard_end = len(acked)
            await wait_for(lambda: len(acked) >= at_reshard_end + 5_000)
            await producers.stop()
        await wait_until_drained(cluster.url, "events", PARTITIONS)
    finally:
        processes.stop_all()

    primaries = {n.address[1]: n for n in await cluster_nodes(seed) if n.primary}
    assert sorted(len(n.slots) for n in primaries.values()) == [4096] * 4
    moved_slots = set(primaries[new_shard.primary.port].slots)
    moved = [
        p for p in range(PARTITIONS) if key_slot(input_key("events", p).encode()) in moved_slots
    ]
    assert moved, "no partition moved: the test would prove nothing"

    events, _ = read_output_events(tmp_path / "data" / "events")
    written = collections.Counter(e["seq"] for e in events)
    log.info(
        "resharding 3 -> 4: %d moves, %d slots in %.2fs, partitions moved %s; acked %d, "
        "lost %d, duplicated %d",
        len(moves),
        sum(m.slot_count for m in moves),
        reshard_seconds,
        moved,
        len(acked),
        len(acked - set(written)),
        sum(1 for count in written.values() if count > 1),
    )
    assert acked - set(written) == set(), "acknowledged events were lost in the resharding"
    assert max(written.values()) == 1, "an event was written twice"


async def test_resharding_reports_its_progress_move_by_move(cluster: ClusterValkey) -> None:
    await asyncio.to_thread(cluster.add_shard)
    seed = ("127.0.0.1", cluster.shards[0].primary.port)
    heard: list[ReshardProgress] = []

    moves = await reshard(seed, progress=heard.append)

    total = sum(m.slot_count for m in moves)
    assert heard[0] == ReshardProgress(0, len(moves), 0, total)
    assert heard[-1] == ReshardProgress(len(moves), len(moves), total, total)
    assert [p.slots_done for p in heard] == sorted(p.slots_done for p in heard)
    states = {p.state for p in heard}
    assert "success" in states, states
    between_moves = [p for p in heard if not p.state]
    assert [p.moves_done for p in between_moves] == list(range(len(moves) + 1))
