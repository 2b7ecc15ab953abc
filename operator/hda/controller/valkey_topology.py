"""Replicated and cluster buffers, decided from what the Valkey nodes said (pure: no I/O, no
clock). `valkey_nodes` asks the nodes and carries out what is decided here.

- `cluster_plan`: what still forms the cluster (meet, assign slots, attach replicas); nothing
  when it is formed, so running it on every pass is idempotent.
- `reshard_plan`: the slot moves that even out a cluster after shards were added (not run yet:
  the runtime's resharding function is to run them).
- `rollout_plan`: the next step of an OnDelete rollout: replicas first, then a failover, then
  the old primary; one StatefulSet at a time.
- `redis_status`: `status.redis` (the primary of each shard, replicas in sync, last failover).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

from hda.api.v1alpha1 import Topology
from hda.api.v1alpha1.status import RedisShardStatus, RedisStatus

CLUSTER_SLOTS = 16384
Role = Literal["primary", "replica"]


@dataclasses.dataclass(frozen=True)
class NodeAddress:
    """Where one Valkey pod answers, and the StatefulSet (shard) it belongs to."""

    pod: str
    group: str
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class NodeState:
    """What one Valkey node said about itself (INFO replication; CLUSTER in a cluster)."""

    pod: str
    reachable: bool = True
    role: Role | None = None
    follows: tuple[str, int] | None = None  # a replica's primary, as configured (host, port)
    link_up: bool = False  # a replica's link to its primary is up and the initial sync is done
    # Cluster only.
    node_id: str | None = None
    known_nodes: int = 0
    slots: int = 0  # slots this node serves
    slot_ranges: tuple[tuple[int, int], ...] = ()  # the same, as inclusive ranges
    slots_assigned: int = 0  # slots assigned in the whole cluster, as this node sees it
    follows_id: str | None = None  # a replica's primary's node ID
    peers_down: tuple[str, ...] = ()  # node IDs this node sees failing or disconnected


@dataclasses.dataclass(frozen=True)
class BufferProbe:
    """One look at every Valkey node of an HDA (and, replicated, what the sentinels say)."""

    nodes: tuple[NodeState, ...]
    sentinel_primary: tuple[str, int] | None = None
    error: str | None = None

    def node(self, pod: str) -> NodeState | None:
        return next((n for n in self.nodes if n.pod == pod), None)


# --- actions ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Wait:
    reason: str


@dataclasses.dataclass(frozen=True)
class Meet:
    """`CLUSTER MEET` from `pod` to `target` (by IP: Valkey does not resolve names there)."""

    pod: str
    target: NodeAddress


@dataclasses.dataclass(frozen=True)
class AssignSlots:
    pod: str
    first: int
    last: int


@dataclasses.dataclass(frozen=True)
class Replicate:
    """`CLUSTER REPLICATE` on `pod`: it becomes a replica of node `primary_id`."""

    pod: str
    primary_id: str


@dataclasses.dataclass(frozen=True)
class Failover:
    """Promote a replica of `group`: `SENTINEL FAILOVER` (replicated; the sentinels pick the
    replica) or `CLUSTER FAILOVER` on `replica` (cluster: coordinated, no write is lost)."""

    group: str
    replica: str


@dataclasses.dataclass(frozen=True)
class DeletePod:
    pod: str


@dataclasses.dataclass(frozen=True)
class SlotMove:
    """Slots `first`..`last` to move from the primary `source` to the primary `target`."""

    source: str
    target: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


ClusterAction = Meet | AssignSlots | Replicate
RolloutAction = Wait | Failover | DeletePod


# --- roles --------------------------------------------------------------------------------------


def primary_of(topology: Topology, group: Sequence[NodeAddress], probe: BufferProbe) -> str | None:
    """The pod that is the primary of one StatefulSet's nodes, or None when that is unclear.

    replicated: the one the sentinels name (they decide failovers). cluster: the primary that
    serves slots, else (a shard without slots yet) the only primary the others follow.
    """
    if topology == "replicated":
        if probe.sentinel_primary is None:
            return None
        host, port = probe.sentinel_primary
        return next((a.pod for a in group if (a.host, a.port) == (host, port)), None)
    states = [s for a in group if (s := probe.node(a.pod)) is not None and s.reachable]
    serving = [s for s in states if s.role == "primary" and s.slots > 0]
    if len(serving) == 1:
        return serving[0].pod
    followed = {s.follows_id for s in states if s.role == "replica"}
    led = [s for s in states if s.role == "primary" and s.node_id in followed]
    return led[0].pod if len(led) == 1 else None


def _replicas_in_sync(
    topology: Topology, group: Sequence[NodeAddress], primary: str, probe: BufferProbe
) -> list[str]:
    """Replicas of `group` that follow `primary` over a live link, past their initial sync."""
    address = next(a for a in group if a.pod == primary)
    leader = probe.node(primary)
    in_sync = []
    for member in group:
        state = probe.node(member.pod)
        if member.pod == primary or state is None or state.role != "replica" or not state.link_up:
            continue
        if topology == "cluster":
            follows = leader is not None and state.follows_id == leader.node_id
        else:
            follows = state.follows == (address.host, address.port)
        if follows:
            in_sync.append(member.pod)
    return in_sync


# --- the cluster's formation ----------------------------------------------------------------------


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """16384 slots split into `shards` contiguous ranges as even as they go."""
    bounds = [CLUSTER_SLOTS * shard // shards for shard in range(shards + 1)]
    return [(bounds[shard], bounds[shard + 1] - 1) for shard in range(shards)]


def cluster_plan(
    groups: Sequence[Sequence[NodeAddress]], probe: BufferProbe
) -> list[ClusterAction] | Wait:
    """What still forms the cluster from `groups` (one per shard, pod 0 first); [] when formed.

    In order, one kind per pass (the cluster gossips in between): every node meets the seed
    (also a node the seed sees down, which may be back on a new IP); a fresh cluster gets its
    slots split over the shards' pods 0; then each pod other than its shard's primary that is an
    empty primary replicates it. A shard added later gets a primary and replicas but no slots:
    moving slots to it is resharding, not formation.
    """
    nodes = [address for group in groups for address in group]
    if probe.error is not None:
        return Wait(probe.error)
    states: dict[str, NodeState] = {}
    for address in nodes:
        state = probe.node(address.pod)
        if state is None or not state.reachable or state.node_id is None:
            return Wait(f"Valkey pod {address.pod} is not reachable")
        states[address.pod] = state
    seed = states[nodes[0].pod]
    meets: list[ClusterAction] = [
        Meet(seed.pod, address)
        for address in nodes[1:]
        if states[address.pod].known_nodes < len(nodes)
        or seed.known_nodes < len(nodes)
        or states[address.pod].node_id in seed.peers_down
    ]
    if meets:
        return meets
    if all(state.slots_assigned == 0 and state.slots == 0 for state in states.values()):
        return [
            AssignSlots(group[0].pod, first, last)
            for group, (first, last) in zip(groups, slot_ranges(len(groups)), strict=True)
        ]
    actions: list[ClusterAction] = []
    for group in groups:
        primary = primary_of("cluster", group, probe) or group[0].pod
        primary_id = states[primary].node_id
        assert primary_id is not None  # every state here has one (checked above)
        for address in group:
            state = states[address.pod]
            if address.pod != primary and state.role == "primary" and state.slots == 0:
                actions.append(Replicate(address.pod, primary_id))
    return actions


def reshard_plan(groups: Sequence[Sequence[NodeAddress]], probe: BufferProbe) -> list[SlotMove]:
    """The slot moves that even out a formed cluster after shards were added: every shard ends
    with 16384 // shards slots or one more. Each shard above its share gives the top of its
    ranges to the shards below theirs, in shard order; [] when balanced (or unknown)."""
    nodes: list[NodeState] = []
    for group in groups:
        primary = primary_of("cluster", group, probe)
        node = probe.node(primary) if primary is not None else None
        if node is None:
            return []
        nodes.append(node)
    counts = [node.slots for node in nodes]
    if sum(counts) != CLUSTER_SLOTS:
        return []  # not formed yet, or slots already in flight
    shares = [last - first + 1 for first, last in slot_ranges(len(groups))]
    shares.sort(reverse=True)  # the larger shares go to the shards that keep the most
    order = sorted(range(len(groups)), key=lambda i: counts[i], reverse=True)
    wanted = dict(zip(order, shares, strict=True))
    spare: list[tuple[str, int, int]] = []  # (source pod, first, last) to give away
    for index, node in enumerate(nodes):
        excess = counts[index] - wanted[index]
        for first, last in sorted(node.slot_ranges, reverse=True):
            if excess <= 0:
                break
            taken = min(excess, last - first + 1)
            spare.append((node.pod, last - taken + 1, last))
            excess -= taken
    moves = []
    for index, node in enumerate(nodes):
        missing = wanted[index] - counts[index]
        while missing > 0 and spare:
            source, first, last = spare.pop(0)
            taken = min(missing, last - first + 1)
            moves.append(SlotMove(source, node.pod, first, first + taken - 1))
            if taken < last - first + 1:
                spare.insert(0, (source, first + taken, last))
            missing -= taken
    return moves


# --- rollouts ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodView:
    """One live Valkey pod as a rollout sees it."""

    name: str
    revision: str  # the pod's controller-revision-hash label
    ready: bool
    terminating: bool = False


@dataclasses.dataclass(frozen=True)
class GroupRollout:
    """One Valkey StatefulSet: its wanted pod count, update revision and live pods."""

    name: str
    pods_wanted: int
    update_revision: str
    pods: tuple[PodView, ...]
    nodes: tuple[NodeAddress, ...]


def _ordinal(pod: str) -> int:
    return int(pod.rsplit("-", 1)[1])


def rollout_plan(
    topology: Topology,
    groups: Sequence[GroupRollout],
    probe: BufferProbe,
    failing_over: Mapping[str, str] | None = None,
) -> RolloutAction | None:
    """The next step of rolling the Valkey StatefulSets to their update revision, or None.

    One StatefulSet at a time, and only while all its pods are ready: outdated replicas are
    deleted first (highest ordinal first); then, when only the primary is outdated, a replica
    in sync is promoted; the old primary is then an outdated replica. A shard without replicas
    (replicas: 0) has no one to fail over to: its primary is deleted and the shard is down
    until it is back. `failing_over` (StatefulSet -> the primary a failover was asked to move
    away from) holds a set while its old primary is still the primary: no second failover.
    """
    for group in groups:
        outdated = [pod for pod in group.pods if pod.revision != group.update_revision]
        if not outdated:
            continue
        if len(group.pods) < group.pods_wanted or any(
            not pod.ready or pod.terminating for pod in group.pods
        ):
            return Wait(f"{group.name}: waiting for every pod to be ready before the next")
        primary = primary_of(topology, group.nodes, probe)
        if primary is None:
            return Wait(f"{group.name}: its primary is not known")
        if (failing_over or {}).get(group.name) == primary:
            return Wait(f"{group.name}: waiting for the failover away from {primary}")
        replicas = sorted(
            (pod.name for pod in outdated if pod.name != primary), key=_ordinal, reverse=True
        )
        if replicas:
            return DeletePod(replicas[0])
        if group.pods_wanted == 1:
            return DeletePod(primary)
        in_sync = _replicas_in_sync(topology, group.nodes, primary, probe)
        if not in_sync:
            return Wait(f"{group.name}: no replica in sync to fail {primary} over to")
        return Failover(group.name, in_sync[0])
    return None


# --- status ------------------------------------------------------------------------------------


def primaries_seen(
    topology: Topology,
    groups: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe | None,
    known: Mapping[str, str],
) -> tuple[bool, dict[str, str]]:
    """Whether `probe` shows a StatefulSet's primary other than the last one `known` (the
    operator's memory, per StatefulSet), and the memory updated. A probe that leaves a primary
    unknown (mid-failover) keeps the one before, so the move is still seen after it: status
    `primary` is unset then, and cannot carry it."""
    updated = dict(known)
    moved = False
    if probe is None or probe.error is not None:
        return moved, updated
    for group in groups:
        primary = primary_of(topology, group, probe)
        if primary is None:
            continue
        moved = moved or known.get(group[0].group) not in (None, primary)
        updated[group[0].group] = primary
    return moved, updated


def redis_status(
    topology: Topology,
    groups: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe | None,
    previous: Mapping[str, object] | None,
    now: str,
    *,
    activity: str | None = None,
    primary_moved: bool = False,
) -> RedisStatus:
    """`status.redis`: per StatefulSet its primary pod and replicas in sync; the last time a
    primary changed (kept from `previous` while none does; `primary_moved`: `primaries_seen`
    saw one change across a probe that left it unknown). `activity` says what the operator
    is doing to the buffer (forming the cluster, rolling a shard), when anything."""
    before = RedisStatus.model_validate(previous) if previous else None
    primaries_before = {shard.name: shard.primary for shard in (before.shards if before else [])}
    last_failover = now if primary_moved else (before.last_failover_time if before else None)
    shards: list[RedisShardStatus] = []
    for group in groups:
        name = group[0].group
        primary: str | None = None
        in_sync: int | None = None
        slots: int | None = None
        if probe is None:
            primary = primaries_before.get(name)  # not asked yet: the last known primary
        elif probe.error is None:
            primary = primary_of(topology, group, probe)
        if probe is not None and primary is not None:
            in_sync = len(_replicas_in_sync(topology, group, primary, probe))
            if primaries_before.get(name) not in (None, primary):
                last_failover = now
            node = probe.node(primary)
            if topology == "cluster" and node is not None:
                slots = node.slots
        shards.append(
            RedisShardStatus(
                name=name,
                primary=primary,
                replicas=len(group) - 1,
                replicas_in_sync=in_sync,
                slots=slots,
            )
        )
    error = None if probe is None else probe.error
    return RedisStatus(
        topology=topology,
        shards=shards,
        last_failover_time=last_failover,
        message=error or activity,
    )
