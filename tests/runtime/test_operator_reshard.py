"""The operator's resharding against real valkey-server processes, driven pass by pass through
its step function (`buffer_pass`): a shard added under load gets its share of the slots with
atomic slot migration, losing and duplicating nothing; a removed shard is drained, forgotten
and reset; a node that came back without its volume has its old ID forgotten."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError
from tests.runtime.test_buffer_topology import (
    CLUSTER_MANIFEST,
    PASSWORD,
    Servers,
    cluster_lines,
    form_cluster,
    formed,
    start_cluster,
    until,
)

from hda.api.v1alpha1 import HyperDriveAccelerator, load_manifest
from hda.controller.buffer_commands import probe_buffer
from hda.controller.buffer_topology import BufferProbe, NodeAddress, buffer_status, retired
from hda.controller.buffer_watch import BufferWatch, buffer_pass
from hda.runtime.codec import input_key

pytestmark = pytest.mark.runtime
log = logging.getLogger(__name__)

PARTITIONS = 16
KEY = "ns/logs"


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def cluster_hda(shards: int) -> HyperDriveAccelerator:
    manifest = CLUSTER_MANIFEST.replace(
        "{topology: cluster}", f"{{topology: cluster, shards: {shards}}}"
    )
    return load_manifest(manifest, source="cluster.yaml")


def every(groups: Sequence[Sequence[NodeAddress]]) -> list[NodeAddress]:
    return [a for group in groups for a in group]


async def operate(
    hda: HyperDriveAccelerator,
    groups: list[list[NodeAddress]],
    leaving: list[list[NodeAddress]] | None = None,
    *,
    watch: BufferWatch | None = None,
    seconds: float = 180.0,
) -> tuple[list[str], list[str], BufferProbe]:
    """Operator passes (probe, `buffer_pass`) until a pass has nothing to do or wait for and
    no resharding runs; the actions taken and the activities reported, in order."""
    watch = watch or BufferWatch(settle=0.5)
    leaving = leaving or []
    woken = asyncio.Event()
    steps: list[str] = []
    activities: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        probe = await probe_buffer("cluster", every([*groups, *leaving]), password=PASSWORD)
        done, activity = await buffer_pass(
            watch, KEY, hda, probe, [], groups=groups, sentinels=[], password=PASSWORD,
            kube=_NoKube(), leaving=leaving, wake=woken.set,
        )  # fmt: skip
        steps += [type(action).__name__ for action in done]
        if activity is not None and activity not in activities:
            activities.append(activity)
        if (
            not done
            and watch.resharding(KEY) is None
            and (activity is None or "drained and out of the cluster" in activity)
        ):
            return steps, activities, probe
        woken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), 0.3)
    raise AssertionError(f"the operator never settled; steps {steps}, activities {activities}")


class _NoKube:
    async def delete(self, kind: object, namespace: str | None, name: str) -> bool:
        raise AssertionError(f"no pod is deleted here, asked for {name}")


async def settled(groups: list[list[NodeAddress]]) -> BufferProbe:
    return await until(
        lambda: probe_buffer("cluster", every(groups), password=PASSWORD),
        lambda p: formed(groups)(p) and all(n.slots_assigned == 16384 for n in p.nodes),  # type: ignore[operator]
        "the cluster never settled",
    )


async def assert_even_without_a_failed_attempt(
    groups: list[list[NodeAddress]], activities: list[str]
) -> None:
    """Once settled, each of the 4 shards serves 4096 slots, and no resharding attempt failed."""
    probe = await settled(groups)
    assert [s.slots for s in buffer_status("cluster", groups, probe, None, "t").shards] == [
        4096
    ] * 4
    assert not [a for a in activities if "failed" in a], activities


class Producer:
    """XADDs to every partition's input stream through a cluster client, one sequence number
    per attempt; a number is acknowledged when its XADD returned (never retried: a retry could
    duplicate)."""

    def __init__(self, port: int) -> None:
        self.client = RedisCluster(host="127.0.0.1", port=port, password=PASSWORD)
        self.acked: set[int] = set()
        self.failed = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            try:
                await self.client.xadd(input_key("events", seq % PARTITIONS), {"seq": str(seq)})
                self.acked.add(seq)
            except RedisError:
                self.failed += 1
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def written(self) -> collections.Counter[int]:
        counts: collections.Counter[int] = collections.Counter()
        for partition in range(PARTITIONS):
            for _, fields in await entries(self.client, input_key("events", partition)):
                counts[int(fields[b"seq"])] += 1
        return counts


async def entries(client: RedisCluster, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the stream `key`."""
    return list(await client.xrange(key) or [])  # type: ignore[arg-type]


async def cluster_nodes_of(address: NodeAddress) -> list[list[str]]:
    client = aioredis.Redis(port=address.port, password=PASSWORD, decode_responses=True)
    try:
        text = await client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
    return [line.split() for line in str(text).splitlines() if line.strip()]


async def test_a_shard_added_under_load_gets_its_share_losing_and_duplicating_nothing(
    nodes: Servers,
) -> None:
    groups = start_cluster(nodes, shards=3, pods=2)
    await form_cluster(groups)
    await settled(groups)
    producer = Producer(groups[0][0].port)
    producer.start()
    try:
        await until(
            lambda: asyncio.sleep(0.1, len(producer.acked)),
            lambda acked: acked >= 2_000,
            "the producer never got going",
        )
        groups += start_cluster(nodes, shards=1, pods=2, first=3)
        watch = BufferWatch(settle=0.5)
        started = time.monotonic()

        steps, activities, _ = await operate(cluster_hda(4), groups, watch=watch)

        seconds = time.monotonic() - started
        at_end = len(producer.acked)
        await until(
            lambda: asyncio.sleep(0.1, len(producer.acked)),
            lambda acked: acked >= at_end + 2_000,
            "the producer stopped after the resharding",
        )
    finally:
        await producer.stop()
    written = await producer.written()
    await producer.client.aclose()

    probe = await settled(groups)
    status = buffer_status("cluster", groups, probe, None, "t")
    assert [s.slots for s in status.shards] == [4096] * 4
    assert steps[-1] == "Reshard"
    assert "Meet" in steps
    assert "Replicate" in steps
    assert any(a.startswith("resharding: moving ") for a in activities)
    resharded = watch.resharded(KEY)
    assert resharded is not None
    assert resharded.outcome.startswith("moved "), resharded
    new_ranges = next(n.slot_ranges for n in probe.nodes if n.pod == "v-shard-3-0")
    moved = [
        p
        for p in range(PARTITIONS)
        if any(
            first <= key_slot(input_key("events", p).encode()) <= last for first, last in new_ranges
        )
    ]
    assert moved, "no partition moved: the test would prove nothing"
    log.info(
        "operator resharding 3 -> 4 under load: %.2fs (formation and migration), partitions "
        "moved %s; acked %d, failed attempts %d, lost %d, duplicated %d",
        seconds,
        moved,
        len(producer.acked),
        producer.failed,
        len(producer.acked - set(written)),
        sum(1 for count in written.values() if count > 1),
    )
    assert producer.acked - set(written) == set(), "acknowledged events were lost"
    assert max(written.values()) == 1, "an event was written twice"


async def test_a_removed_shard_is_drained_forgotten_and_reset(nodes: Servers) -> None:
    groups = start_cluster(nodes, shards=4, pods=2)
    await form_cluster(groups)
    await settled(groups)
    writer = RedisCluster(host="127.0.0.1", port=groups[0][0].port, password=PASSWORD)
    keys = [input_key("events", p) for p in range(PARTITIONS)]
    for key in keys:
        await writer.xadd(key, {"seq": key})
    await writer.aclose()
    kept, leaving = groups[:3], groups[3:]

    steps, activities, probe = await operate(cluster_hda(3), kept, leaving)

    assert steps == ["Reshard", "ForgetNodes"]
    assert retired(leaving, probe)
    assert activities[-1] == (
        "removed shards v-shard-3 drained and out of the cluster: deleting them"
    )
    status = buffer_status("cluster", kept, probe, None, "t")
    assert sorted(s.slots or 0 for s in status.shards) == [5461, 5461, 5462]
    await asyncio.sleep(3)  # gossip rounds: a forgotten node must not come back
    for address in every(kept):
        assert len(await cluster_nodes_of(address)) == 6, address.pod
    reader = RedisCluster(host="127.0.0.1", port=groups[1][0].port, password=PASSWORD)
    try:
        assert [len(await entries(reader, key)) for key in keys] == [1] * PARTITIONS
    finally:
        await reader.aclose()


async def test_the_old_id_of_a_node_that_lost_its_volume_is_forgotten(nodes: Servers) -> None:
    groups = start_cluster(nodes, shards=3, pods=2)
    await form_cluster(groups)
    probe = await settled(groups)
    lost = groups[1][1]
    old_id = next(n.node_id for n in probe.nodes if n.pod == lost.pod)
    assert old_id is not None
    server = next(s for s in nodes.started if s.name == lost.pod)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    shutil.rmtree(nodes.root / lost.pod)  # the volume is gone: a new node ID on restart
    nodes.start(lost.pod, cluster_lines(), port=lost.port)

    steps, activities, _ = await operate(cluster_hda(3), groups)

    assert "ForgetNodes" in steps
    assert any(old_id in a for a in activities if a.startswith("forgetting failed node IDs"))
    probe = await settled(groups)
    assert not any(n.peers_down for n in probe.nodes)
    await asyncio.sleep(3)
    for address in every(groups):
        lines = await cluster_nodes_of(address)
        assert old_id not in [fields[0] for fields in lines], address.pod
        assert len(lines) == 6, address.pod


async def test_a_resharding_cut_off_by_an_operator_restart_is_finished_by_the_next(
    nodes: Servers,
) -> None:
    groups = start_cluster(nodes, shards=3, pods=2)
    await form_cluster(groups)
    await settled(groups)
    writer = RedisCluster(host="127.0.0.1", port=groups[0][0].port, password=PASSWORD)
    keys = [input_key("events", p) for p in range(PARTITIONS)]
    for key in keys:
        for seq in range(200):
            await writer.xadd(key, {"seq": str(seq)})
    groups += start_cluster(nodes, shards=1, pods=2, first=3)
    first = BufferWatch(settle=0.5)
    operator = asyncio.create_task(operate(cluster_hda(4), groups, watch=first))
    await until(
        lambda: asyncio.sleep(0.01, first.resharding(KEY)),
        lambda running: running is not None,
        "the first operator never started resharding",
    )
    operator.cancel()  # the operator dies mid-resharding; Valkey goes on with what it was asked
    first.forget(KEY)
    with contextlib.suppress(asyncio.CancelledError):
        await operator

    steps, activities, _ = await operate(cluster_hda(4), groups)

    # the migration left running is waited for, not collided with (that failed and backed off)
    await assert_even_without_a_failed_attempt(groups, activities)
    log.info("after the restart the operator took %s", steps)
    try:
        assert [len(await entries(writer, key)) for key in keys] == [200] * PARTITIONS
    finally:
        await writer.aclose()


async def test_a_slot_migration_running_before_the_operator_came_is_seen_then_finished(
    nodes: Servers,
) -> None:
    groups = start_cluster(nodes, shards=3, pods=2)
    await form_cluster(groups)
    await settled(groups)
    groups += start_cluster(nodes, shards=1, pods=2, first=3)
    probe = await form_cluster(groups)  # the new shard joined, empty
    target = next(server for server in nodes.started if server.name == "v-shard-3-0")
    target_id = probe.node("v-shard-3-0").node_id  # type: ignore[union-attr]
    source = groups[0][0]
    # Someone (an operator process since gone) moves 100 slots to a target that hangs for now.
    target.process.send_signal(signal.SIGSTOP)
    try:
        client = aioredis.Redis(host="127.0.0.1", port=source.port, password=PASSWORD)
        await client.execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", 0, 99, "NODE", target_id
        )
        await client.aclose()
        seen = await probe_buffer("cluster", [source], password=PASSWORD)
    finally:
        target.process.send_signal(signal.SIGCONT)
    (export,) = seen.node(source.pod).exports  # type: ignore[union-attr]
    assert export.startswith(f"slots 0-99 to {target_id} (")

    steps, activities, _ = await operate(cluster_hda(4), groups)

    await assert_even_without_a_failed_attempt(groups, activities)
    log.info("with a migration already running the operator took %s: %s", steps, activities)
