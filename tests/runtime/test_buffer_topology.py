"""The operator's Valkey probe, cluster formation and failover actions against real valkey-server
processes (cluster-enabled nodes; a primary with replicas and 3 real sentinels)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from hda.api.v1alpha1 import HyperDriveAccelerator, Topology, load_manifest
from hda.controller.buffer_commands import execute, probe_buffer
from hda.controller.buffer_topology import (
    BufferProbe,
    Failover,
    NodeAddress,
    Wait,
    buffer_status,
    cluster_plan,
    primary_of,
    reshard_moves,
)
from hda.controller.buffer_watch import (
    BufferWatch,
    buffer_pass,
    group_rollouts,
)
from hda.controller.observe import LagProbe, PodSummary
from hda.runtime.codec import input_key
from hda.runtime.config import WORKER_GROUP
from hda.runtime.embedded import free_port, valkey_binary
from hda.specs import child_names

pytestmark = pytest.mark.runtime

PASSWORD = 'pa ss"word'  # a space and a quote: quoting is tested too
DEADLINE = 60.0


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]


class Servers:
    """valkey-server processes from config files, SIGKILLed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Server] = []

    def start(
        self,
        name: str,
        lines: list[str],
        *,
        sentinel: bool = False,
        bus: bool = False,
        port: int | None = None,
    ) -> Server:
        """Start `name`; with `port`, again in its old directory (a pod back on its volume)."""
        port = port or (free_port(bus_offset=10000) if bus else free_port())
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "valkey.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    "logfile valkey.log",
                    "protected-mode no",
                    *lines,
                ]
            )
            + "\n"
        )
        args = [str(valkey_binary()), str(config), *(["--sentinel"] if sentinel else [])]
        process = subprocess.Popen(
            args, cwd=directory, stdin=subprocess.DEVNULL, start_new_session=True
        )
        server = Server(name, port, process)
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def node_lines() -> list[str]:
    escaped = PASSWORD.replace('"', '\\"')
    return [
        f'requirepass "{escaped}"',
        f'masterauth "{escaped}"',
        "appendonly yes",
        'save ""',
    ]


async def until(probe_fn: object, check: object, message: str) -> BufferProbe:
    """Probe until `check(probe)` holds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        probe = await probe_fn()  # type: ignore[operator]
        if check(probe):  # type: ignore[operator]
            return probe  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}; last probe: {probe}")
        await asyncio.sleep(0.2)


# --- cluster ------------------------------------------------------------------------------------


def cluster_lines() -> list[str]:
    return [
        *node_lines(),
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        "cluster-node-timeout 1000",
        "cluster-allow-replica-migration no",
    ]


def start_cluster(
    servers: Servers, shards: int, pods: int, first: int = 0
) -> list[list[NodeAddress]]:
    groups = []
    for shard in range(first, first + shards):
        group = []
        for ordinal in range(pods):
            name = f"v-shard-{shard}-{ordinal}"
            server = servers.start(name, cluster_lines(), bus=True)
            group.append(NodeAddress(name, f"v-shard-{shard}", "127.0.0.1", server.port))
        groups.append(group)
    return groups


async def form_cluster(groups: list[list[NodeAddress]]) -> BufferProbe:
    """Probe, plan, act until the plan is empty: what the operator does on each pass."""
    nodes = [a for group in groups for a in group]
    deadline = time.monotonic() + DEADLINE
    while True:
        probe = await probe_buffer("cluster", nodes, password=PASSWORD)
        plan = cluster_plan(groups, probe)
        if plan == []:
            return probe
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster did not form: last plan {plan}")
        if not isinstance(plan, Wait):
            for action in plan:
                # as the operator does (run_buffer_step): a refused action is tried again on the
                # next pass (REPLICATE can race the gossip: "Unknown node" for a moment)
                with contextlib.suppress(RedisError):
                    await execute(action, nodes, password=PASSWORD)
        await asyncio.sleep(0.2)


def formed(groups: list[list[NodeAddress]]) -> object:
    def check(probe: BufferProbe) -> bool:
        status = buffer_status("cluster", groups, probe, None, "t")
        return all(shard.replicas_in_sync == 1 for shard in status.shards)

    return check


async def test_plan_forms_a_cluster_of_real_nodes_shard_by_statefulset(servers: Servers) -> None:
    groups = start_cluster(servers, shards=3, pods=2)
    nodes = [a for group in groups for a in group]

    await form_cluster(groups)
    probe = await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD),
        formed(groups),
        "replicas never came in sync",
    )

    status = buffer_status("cluster", groups, probe, None, "2026-11-30T00:00:00Z")
    assert [(s.name, s.primary, s.slots) for s in status.shards] == [
        ("v-shard-0", "v-shard-0-0", 5461),
        ("v-shard-1", "v-shard-1-0", 5461),
        ("v-shard-2", "v-shard-2-0", 5462),
    ]
    assert cluster_plan(groups, probe) == []  # formed: nothing more to do on the next pass


async def test_a_shard_added_later_gets_its_replica_and_no_slots(servers: Servers) -> None:
    groups = start_cluster(servers, shards=3, pods=2)
    await form_cluster(groups)
    groups += start_cluster(servers, shards=1, pods=2, first=3)

    probe = await form_cluster(groups)
    probe = await until(
        lambda: probe_buffer("cluster", [a for g in groups for a in g], password=PASSWORD),
        formed(groups),
        "the new shard's replica never came in sync",
    )

    reshard = reshard_moves(groups, [], probe)
    assert reshard is not None
    assert [(m.source, m.target, m.count) for m in reshard.moves] == [
        ("v-shard-0-0", "v-shard-3-0", 1365),
        ("v-shard-1-0", "v-shard-3-0", 1365),
        ("v-shard-2-0", "v-shard-3-0", 1366),
    ]
    new_shard = buffer_status("cluster", groups, probe, None, "t").shards[3]
    assert (new_shard.primary, new_shard.slots, new_shard.replicas_in_sync) == (
        "v-shard-3-0",
        0,
        1,
    )


async def test_cluster_failover_promotes_the_replica_and_status_records_it(
    servers: Servers,
) -> None:
    groups = start_cluster(servers, shards=3, pods=2)
    nodes = [a for group in groups for a in group]
    await form_cluster(groups)
    probe = await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD), formed(groups), "no sync"
    )
    before = buffer_status("cluster", groups, probe, None, "2026-11-30T00:00:00Z").to_wire()

    await execute(Failover("v-shard-1", "v-shard-1-1"), nodes, password=PASSWORD)
    probe = await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD),
        lambda p: primary_of("cluster", groups[1], p) == "v-shard-1-1",
        "the replica was never promoted",
    )

    after = buffer_status("cluster", groups, probe, before, "2026-11-30T00:01:00Z")
    assert after.shards[1].primary == "v-shard-1-1"
    assert after.shards[1].slots == 5461
    assert after.last_failover_time == "2026-11-30T00:01:00Z"


async def until_accepted(
    action: Failover, nodes: list[NodeAddress], sentinels: list[tuple[str, int]]
) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await execute(action, nodes, sentinels=sentinels, password=PASSWORD)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# --- replicated with sentinels ------------------------------------------------------------------


def start_replicated(
    servers: Servers, replicas: int
) -> tuple[list[NodeAddress], list[tuple[str, int]]]:
    primary = servers.start("v-0", [*node_lines(), "replica-announce-ip 127.0.0.1"])
    group = [NodeAddress("v-0", "v", "127.0.0.1", primary.port)]
    for ordinal in range(1, replicas + 1):
        server = servers.start(
            f"v-{ordinal}",
            [*node_lines(), "replica-announce-ip 127.0.0.1", f"replicaof 127.0.0.1 {primary.port}"],
        )
        group.append(NodeAddress(f"v-{ordinal}", "v", "127.0.0.1", server.port))
    escaped = PASSWORD.replace('"', '\\"')
    sentinels = []
    for index in range(3):
        sentinel = servers.start(
            f"s-{index}",
            [
                f"sentinel monitor buffer 127.0.0.1 {primary.port} 2",
                "sentinel down-after-milliseconds buffer 1000",
                "sentinel failover-timeout buffer 10000",
                f'sentinel auth-pass buffer "{escaped}"',
                f'requirepass "{escaped}"',
            ],
            sentinel=True,
        )
        sentinels.append(("127.0.0.1", sentinel.port))
    return group, sentinels


async def test_probe_names_the_sentinels_primary_and_the_replicas_in_sync(
    servers: Servers,
) -> None:
    group, sentinels = start_replicated(servers, replicas=2)

    probe = await until(
        lambda: probe_buffer("replicated", group, sentinels=sentinels, password=PASSWORD),
        lambda p: (
            buffer_status("replicated", [group], p, None, "t").shards[0].replicas_in_sync == 2
        ),
        "the replicas never came in sync",
    )

    [shard] = buffer_status("replicated", [group], probe, None, "t").shards
    assert (shard.primary, shard.replicas, shard.slots) == ("v-0", 2, None)


async def test_sentinel_failover_moves_the_primary_and_status_records_the_time(
    servers: Servers,
) -> None:
    group, sentinels = start_replicated(servers, replicas=2)
    probe = await until(
        lambda: probe_buffer("replicated", group, sentinels=sentinels, password=PASSWORD),
        lambda p: (
            buffer_status("replicated", [group], p, None, "t").shards[0].replicas_in_sync == 2
        ),
        "the replicas never came in sync",
    )
    before = buffer_status("replicated", [group], probe, None, "2026-11-30T00:00:00Z").to_wire()

    # Sentinels learn the replicas from the primary every few seconds; until then they answer
    # NOGOODSLAVE, and the operator retries on its next pass.
    await until_accepted(Failover("v", "v-1"), group, sentinels)
    probe = await until(
        lambda: probe_buffer("replicated", group, sentinels=sentinels, password=PASSWORD),
        lambda p: primary_of("replicated", group, p) not in (None, "v-0"),
        "the sentinels never moved the primary",
    )

    after = buffer_status("replicated", [group], probe, before, "2026-11-30T00:02:00Z")
    assert after.shards[0].primary in {"v-1", "v-2"}
    assert after.last_failover_time == "2026-11-30T00:02:00Z"


async def test_probe_reports_unreachable_nodes_without_waiting_forever(servers: Servers) -> None:
    group, sentinels = start_replicated(servers, replicas=1)
    for server in servers.started:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()

    probe = await probe_buffer("replicated", group, sentinels=sentinels, password=PASSWORD)

    assert probe.error == "no Valkey pod reachable"
    assert not any(node.reachable for node in probe.nodes)
    assert (
        buffer_status("replicated", [group], probe, None, "t").message == "no Valkey pod reachable"
    )


async def _answer_with_malformed_cluster_nodes(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A RESP server that answers like a fresh cluster node, except for one CLUSTER NODES line
    cut short: the only way to get a malformed reply in front of the probe."""
    replies = {
        "INFO": "# Replication\r\nrole:master\r\n",
        "CLUSTER MYID": "aaaa",
        "CLUSTER INFO": "cluster_known_nodes:2\r\ncluster_slots_assigned:16384\r\n",
        "CLUSTER NODES": (
            "aaaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n"
            "bbbb 127.0.0.1:7001@17001 master\n"
        ),
    }
    try:
        while header := await reader.readline():
            words = []
            for _ in range(int(header[1:])):
                length = int((await reader.readline())[1:])
                words.append((await reader.readexactly(length + 2))[:-2].decode())
            command = " ".join(words[:2]).upper()
            reply = replies.get(command, replies.get(words[0].upper()))
            if reply is None:
                writer.write(b"+OK\r\n")
            else:
                writer.write(b"$%d\r\n%s\r\n" % (len(reply), reply.encode()))
            await writer.drain()
    finally:
        writer.close()


async def test_a_malformed_cluster_nodes_reply_is_a_probe_error_naming_the_line() -> None:
    server = await asyncio.start_server(_answer_with_malformed_cluster_nodes, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    address = NodeAddress("v-shard-0-0", "v-shard-0", "127.0.0.1", port)
    async with server:
        probe = await probe_buffer("cluster", [address], password=None)

    line = "CLUSTER NODES line 2: expected 8 or more fields, got 3"
    assert probe.error is not None
    assert probe.error.startswith(f"unreadable Valkey reply from v-shard-0-0: {line}"), probe.error
    assert not probe.nodes[0].reachable
    assert cluster_plan([[address]], probe) == Wait(probe.error)


# --- lag on a cluster ---------------------------------------------------------------------------

CLUSTER_MANIFEST = """
apiVersion: hda.shitops.dev/v1alpha1
kind: HyperDriveAccelerator
metadata: {name: logs, namespace: ns}
spec:
  streams: [{name: events, partitions: 6}]
  redis: {topology: cluster}
"""


async def test_lag_probe_reads_every_partition_across_the_shards(servers: Servers) -> None:
    groups = start_cluster(servers, shards=3, pods=1)
    await form_cluster(groups)
    await until(
        lambda: probe_buffer("cluster", [g[0] for g in groups], password=PASSWORD),
        lambda p: all(node.slots_assigned == 16384 for node in p.nodes),
        "the nodes never learned every slot's owner",
    )
    hda = load_manifest(CLUSTER_MANIFEST, source="cluster.yaml")
    seed = groups[0][0]
    writer = RedisCluster(host=seed.host, port=seed.port, password=PASSWORD)
    try:
        for partition in range(6):
            key = input_key("events", partition)
            await writer.xgroup_create(key, WORKER_GROUP, id="0", mkstream=True)
            for _ in range(partition + 1):
                await writer.xadd(key, {"e": "1"})
        slots = {writer.keyslot(input_key("events", p)) for p in range(6)}
        owners = {writer.nodes_manager.get_node_from_slot(slot).port for slot in slots}
    finally:
        await writer.aclose()
    woken = asyncio.Event()
    probe = LagProbe(address=(seed.host, seed.port), timeout=2.0)

    assert (
        probe.lag(
            "ns/logs", hda, child_names(hda), password=PASSWORD, buffer_ready=True, wake=woken.set
        )
        is None
    )
    await asyncio.wait_for(woken.wait(), DEADLINE)
    lag = probe.lag(
        "ns/logs", hda, child_names(hda), password=PASSWORD, buffer_ready=True, wake=woken.set
    )

    assert len(owners) > 1, "the partitions should spread over more than one shard"
    assert lag is not None
    assert lag.error is None
    [events] = lag.streams
    assert (events.length, events.lag, events.pending) == (21, 21, 0)


# --- a rolling update with a failover -----------------------------------------------------------

REPLICATED_MANIFEST = """
apiVersion: hda.shitops.dev/v1alpha1
kind: HyperDriveAccelerator
metadata: {name: logs, namespace: ns}
spec:
  streams: [{name: events}]
  redis: {topology: replicated, replicas: 2}
"""


class StatefulSetStandIn:
    """Plays the Kubernetes side of a rollout: a deleted pod is SIGKILLed and comes back on its
    port and data directory at the update revision. Replicated, it comes back as a replica of
    whatever primary the sentinels name (what its entrypoint does, tested in
    test_valkey_scripts.py); cluster, with its nodes.conf, from which it rejoins its shard."""

    def __init__(
        self,
        servers: Servers,
        topology: Topology,
        groups: list[list[NodeAddress]],
        sentinels: list[tuple[str, int]],
    ) -> None:
        self.servers = servers
        self.topology = topology
        self.groups = groups
        self.nodes = [a for group in groups for a in group]
        self.sentinels = sentinels
        self.revisions = {address.pod: "old" for address in self.nodes}
        self.deleted: list[tuple[str, str | None]] = []  # (pod, its shard's primary then)

    async def delete(self, kind: object, namespace: str | None, name: str) -> bool:
        probe = await probe_buffer(
            self.topology, self.nodes, sentinels=self.sentinels, password=PASSWORD
        )
        group = next(g for g in self.groups if any(a.pod == name for a in g))
        primary = primary_of(self.topology, group, probe)
        self.deleted.append((name, primary))
        server = next(
            s for s in self.servers.started if s.name == name and s.process.poll() is None
        )
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        address = next(a for a in group if a.pod == name)
        if self.topology == "cluster":
            lines = cluster_lines()
        else:
            leader = next(a for a in group if a.pod == primary)
            follow = [] if primary == name else [f"replicaof 127.0.0.1 {leader.port}"]
            lines = [*node_lines(), "replica-announce-ip 127.0.0.1", *follow]
        self.servers.start(name, lines, port=address.port)
        self.revisions[name] = "new"
        return True

    def pods(self, probe: BufferProbe) -> list[PodSummary]:
        """Ready as a kubelet would see it: PONG, which a replica answers once in sync."""
        pods = []
        for address in self.nodes:
            node = probe.node(address.pod)
            ready = node is not None and node.reachable and (node.role == "primary" or node.link_up)
            pods.append(
                PodSummary(
                    address.pod, "valkey", (), revision=self.revisions[address.pod], ready=ready
                )
            )
        return pods

    async def roll(self, hda: HyperDriveAccelerator) -> list[str]:
        """Operator passes until the rollout is done; the actions taken, in order."""
        watch = BufferWatch()
        steps: list[str] = []
        revisions = {group[0].group: {"status": {"updateRevision": "new"}} for group in self.groups}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            probe = await probe_buffer(
                self.topology, self.nodes, sentinels=self.sentinels, password=PASSWORD
            )
            rollouts = group_rollouts(self.groups, revisions, self.pods(probe))
            done, activity = await buffer_pass(
                watch, "ns/logs", hda, probe, rollouts, groups=self.groups,
                sentinels=self.sentinels, password=PASSWORD, kube=self,
            )  # fmt: skip
            if not done and activity is None:
                return steps
            steps += [type(action).__name__ for action in done]
            await asyncio.sleep(0.3)  # no settling: the pending failover alone must hold it
        raise AssertionError(f"the rollout did not finish; steps {steps}")


async def test_a_rollout_restarts_replicas_then_fails_over_then_the_old_primary(
    servers: Servers,
) -> None:
    group, sentinels = start_replicated(servers, replicas=2)
    hda = load_manifest(REPLICATED_MANIFEST, source="replicated.yaml")
    standin = StatefulSetStandIn(servers, "replicated", [group], sentinels)
    writer = aioredis.Redis(port=group[0].port, password=PASSWORD)
    await writer.set("acknowledged", "before the rollout")
    await writer.execute_command("WAIT", 2, 5000)  # type: ignore[no-untyped-call]
    await writer.aclose()

    steps = await standin.roll(hda)

    assert steps == ["DeletePod", "DeletePod", "Failover", "DeletePod"]
    assert [pod for pod, _ in standin.deleted] == ["v-2", "v-1", "v-0"]
    # The property that matters: no pod was deleted while it was the primary.
    assert all(pod != primary for pod, primary in standin.deleted), standin.deleted
    assert set(standin.revisions.values()) == {"new"}
    probe = await probe_buffer("replicated", group, sentinels=sentinels, password=PASSWORD)
    new_primary = next(a for a in group if a.pod == primary_of("replicated", group, probe))
    reader = aioredis.Redis(port=new_primary.port, password=PASSWORD)
    try:
        assert await reader.get("acknowledged") == b"before the rollout"
    finally:
        await reader.aclose()


async def test_a_cluster_rollout_fails_each_shard_over_before_restarting_its_primary(
    servers: Servers,
) -> None:
    groups = start_cluster(servers, shards=3, pods=2)
    nodes = [a for g in groups for a in g]
    await form_cluster(groups)
    await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD),
        lambda p: formed(groups)(p) and all(n.slots_assigned == 16384 for n in p.nodes),  # type: ignore[operator]
        "the cluster never settled",
    )
    cluster = RedisCluster(host="127.0.0.1", port=groups[0][0].port, password=PASSWORD)
    keys = [f"{{p{i}}}:input" for i in range(30)]
    for key in keys:
        await cluster.set(key, "before the rollout")
    await cluster.aclose()
    hda = load_manifest(CLUSTER_MANIFEST, source="cluster.yaml")
    standin = StatefulSetStandIn(servers, "cluster", groups, [])

    steps = await standin.roll(hda)

    assert steps == ["DeletePod", "Failover", "DeletePod"] * 3
    assert all(pod != primary for pod, primary in standin.deleted), standin.deleted
    probe = await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD),
        formed(groups),
        "the shards' replicas never came back in sync",
    )
    assert [s.primary for s in buffer_status("cluster", groups, probe, None, "t").shards] == [
        "v-shard-0-1",
        "v-shard-1-1",
        "v-shard-2-1",
    ]
    cluster = RedisCluster(host="127.0.0.1", port=groups[0][1].port, password=PASSWORD)
    try:
        assert [await cluster.get(key) for key in keys] == [b"before the rollout"] * 30
    finally:
        await cluster.aclose()


async def test_a_cluster_whose_every_node_came_back_on_a_new_address_is_met_again(
    servers: Servers,
) -> None:
    groups = start_cluster(servers, shards=3, pods=2)
    nodes = [a for g in groups for a in g]
    await form_cluster(groups)
    await until(
        lambda: probe_buffer("cluster", nodes, password=PASSWORD),
        formed(groups),
        "the cluster never formed",
    )
    servers.kill_all()
    # Every pod back at once on its volume (nodes.conf) but at a new address, as pods with new IPs.
    moved = [
        [
            NodeAddress(
                a.pod, a.group, a.host, servers.start(a.pod, cluster_lines(), bus=True).port
            )
            for a in group
        ]
        for group in groups
    ]

    probe = await form_cluster(moved)
    probe = await until(
        lambda: probe_buffer("cluster", [a for g in moved for a in g], password=PASSWORD),
        lambda p: formed(moved)(p) and not any(n.peers_down for n in p.nodes),  # type: ignore[operator]
        "the cluster never healed",
    )

    status = buffer_status("cluster", moved, probe, None, "t")
    assert sorted(s.slots or 0 for s in status.shards) == [5461, 5461, 5462]
