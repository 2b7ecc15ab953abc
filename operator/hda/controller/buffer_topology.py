"""Replicated and cluster buffers, decided from what the Valkey nodes said (pure: no I/O, no
clock). `buffer_commands` asks the nodes and carries out what is decided here.

- `cluster_plan`: what still forms the cluster (meet, assign slots, attach replicas); nothing
  when it is formed, so running it on every pass is idempotent.
- `reshard_moves`: the resharding that evens the slots out over the shards the spec has and
  empties the removed ones (the runtime's `plan_moves` on the live slot map); `retire_plan`
  then takes drained removed nodes out of the cluster, `orphan_node_ids` names failed node IDs
  no pod has any more (to forget).
- `rollout_plan`: the next step of an OnDelete rollout: replicas first, then a failover, then
  the old primary; one StatefulSet at a time.
- `reshard_backoff`: how long a resharding that failed waits before it is tried again.
- `buffer_status`: `status.redis` (the primary of each shard, replicas in sync, last failover).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from hda.api.v1alpha1 import Topology
from hda.api.v1alpha1.status import BufferShardStatus, BufferStatus
from hda.runtime.topology.reshard import plan_moves

CLUSTER_SLOTS = 16384
Role = Literal["primary", "replica"]
# After n failed reshardings in a row the next waits min(base * 2^(n-1), cap): a resharding
# that cannot succeed (a source refusing MIGRATESLOTS, a node gone) is not retried every pass.
RESHARD_RETRY_BASE_SECONDS = 15.0
RESHARD_RETRY_CAP_SECONDS = 600.0


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
    reply_error: str | None = None  # it answered something unreadable (a malformed reply)
    # Cluster only.
    node_id: str | None = None
    known_nodes: int = 0
    slots: int = 0  # slots this node serves
    slot_ranges: tuple[tuple[int, int], ...] = ()  # the same, as inclusive ranges
    slots_assigned: int = 0  # slots assigned in the whole cluster, as this node sees it
    follows_id: str | None = None  # a replica's primary's node ID
    peers_down: tuple[str, ...] = ()  # node IDs this node sees failing or disconnected
    peers_serving: tuple[str, ...] = ()  # of those, the ones it still sees serving slots
    exports: tuple[str, ...] = ()  # slot migrations it runs as the source, described


@dataclasses.dataclass(frozen=True)
class BufferProbe:
    """One look at every Valkey node of an HDA (and, replicated, what the sentinels say)."""

    nodes: tuple[NodeState, ...]
    sentinel_primary: tuple[str, int] | None = None
    error: str | None = None

    def node(self, pod: str) -> NodeState | None:
        return next((n for n in self.nodes if n.pod == pod), None)

    @property
    def unsettled(self) -> bool:
        """A node is unreachable, or sees a peer down, or the probe failed: a failover may be
        under way, and its outcome is worth seeing soon."""
        return self.error is not None or any(not n.reachable or n.peers_down for n in self.nodes)


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
    """`count` slots to move from the primary pod `source` to the primary pod `target`."""

    source: str
    target: str
    count: int


@dataclasses.dataclass(frozen=True)
class Reshard:
    """Spread the slots over the primaries `keep` (node IDs, shard order) with the runtime's
    `reshard` (atomic slot migration); `moves` is what the plan was when decided, for status."""

    seed: str  # the pod whose slot map the runtime reads (the first shard's primary)
    keep: tuple[str, ...]
    moves: tuple[SlotMove, ...]

    def describe(self) -> str:
        return ", ".join(f"{m.count} slots {m.source} -> {m.target}" for m in self.moves)


@dataclasses.dataclass(frozen=True)
class ForgetNodes:
    """`CLUSTER FORGET` each of `node_ids` on every pod of `on`, then `CLUSTER RESET HARD` on
    the pods of `reset` (removed shards' drained nodes)."""

    node_ids: tuple[str, ...]
    on: tuple[str, ...]
    reset: tuple[str, ...] = ()


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


def _owned_slots(
    groups: Sequence[Sequence[NodeAddress]], probe: BufferProbe
) -> dict[str, tuple[int, ...]] | None:
    """Node ID -> the slots it serves, for every primary of `groups`; None when a node is
    unknown or the primaries do not serve all 16384 slots (not formed, or a node lost)."""
    owned: dict[str, tuple[int, ...]] = {}
    for group in groups:
        for address in group:
            state = probe.node(address.pod)
            if state is None or not state.reachable or state.node_id is None:
                return None
            if state.role == "primary":
                owned[state.node_id] = tuple(
                    slot for first, last in state.slot_ranges for slot in range(first, last + 1)
                )
    if sum(len(slots) for slots in owned.values()) != CLUSTER_SLOTS:
        return None
    return owned


def reshard_blocker(
    groups: Sequence[Sequence[NodeAddress]],
    leaving: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe,
) -> str | None:
    """Why no resharding may be planned from this probe although every node answered, or None:
    a slot migration this operator did not start is still running (an earlier operator process
    started it: planning around it would ask for slots already on the move), or the primaries
    do not serve 16384 slots between them (a migration handing its slots over, or a shard lost)."""
    exporting = [f"{node.pod}: {export}" for node in probe.nodes for export in node.exports]
    if exporting:
        return f"a slot migration started earlier is still running ({'; '.join(exporting)})"
    every = [address for group in [*groups, *leaving] for address in group]
    states = [probe.node(address.pod) for address in every]
    if any(state is None or not state.reachable for state in states):
        return None  # formation and removal say which node is missing
    served = sum(state.slots for state in states if state is not None and state.role == "primary")
    if served != CLUSTER_SLOTS:
        return f"the primaries serve {served} of {CLUSTER_SLOTS} slots"
    return None


def reshard_moves(
    groups: Sequence[Sequence[NodeAddress]],
    leaving: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe,
) -> Reshard | None:
    """The resharding that evens out the slots over the primaries of `groups` (in shard order)
    and empties every primary of `leaving` (shards the spec no longer has), planned by the
    runtime's `plan_moves` from the live slot map; None when balanced or not known."""
    owned = _owned_slots([*groups, *leaving], probe)
    if owned is None:
        return None
    keep: list[str] = []
    for group in groups:
        primary = primary_of("cluster", group, probe)
        state = probe.node(primary) if primary is not None else None
        if state is None or state.node_id is None:
            return None
        keep.append(state.node_id)
    moves = plan_moves(owned, keep)
    if not moves:
        return None
    pods = {state.node_id: state.pod for state in probe.nodes if state.node_id is not None}
    return Reshard(
        seed=pods[keep[0]],
        keep=tuple(keep),
        moves=tuple(
            SlotMove(pods[move.source], pods[move.target], move.slot_count) for move in moves
        ),
    )


@dataclasses.dataclass(frozen=True)
class Resharded:
    """How the last resharding of an HDA ended: when (RFC 3339), what it did or why not, the
    reshardings failed in a row up to and with it (0: it succeeded), and the
    `spec.redis.shards` it aimed at (None: not recorded)."""

    at: str
    outcome: str
    failures: int = 0
    shards: int | None = None


def resharding_ended(
    previous: Resharded | None, at: str, outcome: str, *, failed: bool, shards: int
) -> Resharded:
    """The record of a resharding that just ended: a failure counts on from the last one
    when that aimed at the same shard count; a success starts the count over."""
    failures = 0
    if failed:
        failures = 1
        if previous is not None and previous.shards == shards:
            failures += previous.failures
    return Resharded(at, outcome, failures, shards)


def last_resharding(redis: Mapping[str, object] | None) -> Resharded | None:
    """The last resharding as `status.redis` (wire form) recorded it; None without one, or
    when that status does not parse (written by another version: start afresh)."""
    if not redis:
        return None
    try:
        status = BufferStatus.model_validate(redis)
    except ValidationError:
        return None
    if status.last_reshard_time is None:
        return None
    return Resharded(
        status.last_reshard_time,
        status.last_reshard or "",
        status.reshard_failures or 0,
        status.reshard_shards,
    )


def reshard_retry_delay(
    failures: int,
    *,
    base: float = RESHARD_RETRY_BASE_SECONDS,
    cap: float = RESHARD_RETRY_CAP_SECONDS,
) -> float:
    """Seconds between the end of the `failures`-th failed resharding in a row and the next."""
    if failures <= 0:
        return 0.0
    return min(base * 2.0 ** min(failures - 1, 64), cap)


def reshard_retry_at(last: Resharded | None, shards: int | None) -> datetime | None:
    """When a resharding may start again after `last` failed; None: at once (none failed, or
    `spec.redis.shards` is no longer what the failed one aimed at)."""
    if last is None or last.failures == 0 or last.shards != shards:
        return None
    try:
        ended = datetime.fromisoformat(last.at)
    except ValueError:  # not a time we wrote: do not hold the resharding back on it
        return None
    if ended.tzinfo is None:
        ended = ended.replace(tzinfo=UTC)
    return ended + timedelta(seconds=reshard_retry_delay(last.failures))


def _retry_reason(failures: int, due: datetime) -> str:
    times = "once" if failures == 1 else f"{failures} times in a row"
    return f"resharding failed {times}; next attempt at {due.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def reshard_backoff(last: Resharded | None, shards: int, now: datetime) -> Wait | None:
    """Wait (saying until when) while the reshardings that failed in a row back off; None when
    one may start now."""
    due = reshard_retry_at(last, shards)
    if last is None or due is None or now >= due:
        return None
    return Wait(_retry_reason(last.failures, due))


def reshard_failure_event(resharded: Resharded) -> str | None:
    """The Event for a resharding that just ended: None when it succeeded; else why it failed
    and when the next attempt is due."""
    if resharded.failures == 0:
        return None
    due = reshard_retry_at(resharded, resharded.shards)
    if due is None:
        return f"resharding {resharded.outcome}"
    return f"{_retry_reason(resharded.failures, due)} (last: {resharded.outcome})"


def replicas_behind(groups: Sequence[Sequence[NodeAddress]], probe: BufferProbe) -> list[str]:
    """The StatefulSets of `groups` whose replicas are not all in sync with their primary:
    slots moved there now would be written without a copy (and `acknowledge: replica` would
    wait on a replica that is not there)."""
    behind = []
    for group in groups:
        primary = primary_of("cluster", group, probe)
        if (
            primary is None
            or len(_replicas_in_sync("cluster", group, primary, probe)) < len(group) - 1
        ):
            behind.append(group[0].group)
    return behind


def orphan_node_ids(groups: Sequence[Sequence[NodeAddress]], probe: BufferProbe) -> tuple[str, ...]:
    """Node IDs the cluster sees failing that no pod has any more (a pod that lost its volume
    came back with a new ID). Only when every pod answers with its ID, so a pod that is merely
    restarting is never taken for one; never a node that still serves slots."""
    ids: set[str] = set()
    for group in groups:
        for address in group:
            state = probe.node(address.pod)
            if state is None or not state.reachable or state.node_id is None:
                return ()
            ids.add(state.node_id)
    seen_down = {
        node_id for state in probe.nodes if state.reachable for node_id in state.peers_down
    }
    serving = {
        node_id for state in probe.nodes if state.reachable for node_id in state.peers_serving
    }
    return tuple(sorted(seen_down - ids - serving))


def retire_plan(
    groups: Sequence[Sequence[NodeAddress]],
    leaving: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe,
) -> ForgetNodes | Wait | None:
    """Take the drained nodes of `leaving` out of the cluster: every remaining node forgets
    them, then they reset (so they gossip about the cluster no more). Wait while any of them
    still serves a slot or does not answer; None when they are out already (`retired`)."""
    nodes = [address for group in leaving for address in group]
    if not nodes or retired(leaving, probe):
        return None
    ids = []
    for address in nodes:
        state = probe.node(address.pod)
        if state is None or not state.reachable or state.node_id is None:
            return Wait(f"Valkey pod {address.pod} of a removed shard is not reachable")
        if state.slots:
            return Wait(f"{address.pod} of a removed shard still serves {state.slots} slots")
        ids.append(state.node_id)
    return ForgetNodes(
        tuple(ids),
        on=tuple(a.pod for group in groups for a in group),
        reset=tuple(a.pod for a in nodes),
    )


def retired(leaving: Sequence[Sequence[NodeAddress]], probe: BufferProbe) -> bool:
    """Every pod of `leaving` answers, serves no slot and knows no other node: its StatefulSet
    can go without taking a slot, or a member the cluster still counts, with it."""
    for group in leaving:
        for address in group:
            state = probe.node(address.pod)
            if (
                state is None
                or not state.reachable
                or state.node_id is None
                or state.slots
                or state.slots_assigned
                or state.known_nodes > 1
            ):
                return False
    return True


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


def buffer_status(
    topology: Topology,
    groups: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe | None,
    previous: Mapping[str, object] | None,
    now: str,
    *,
    activity: str | None = None,
    resharded: Resharded | None = None,
    primary_moved: bool = False,
) -> BufferStatus:
    """`status.redis`: per StatefulSet its primary pod and replicas in sync; the last time a
    primary changed (kept from `previous` while none does; `primary_moved`: `primaries_seen`
    saw one change across a probe that left it unknown). `activity` says what the operator
    is doing to the buffer (forming the cluster, resharding, rolling a shard), when anything;
    `resharded` how its last resharding ended (kept from `previous` without)."""
    before = BufferStatus.model_validate(previous) if previous else None
    primaries_before = {shard.name: shard.primary for shard in (before.shards if before else [])}
    last_failover = now if primary_moved else (before.last_failover_time if before else None)
    shards: list[BufferShardStatus] = []
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
            BufferShardStatus(
                name=name,
                primary=primary,
                replicas=len(group) - 1,
                replicas_in_sync=in_sync,
                slots=slots,
            )
        )
    error = None if probe is None else probe.error
    if resharded is None:
        resharded = last_resharding(previous)
    return BufferStatus(
        topology=topology,
        shards=shards,
        last_failover_time=last_failover,
        last_reshard_time=resharded.at if resharded else None,
        last_reshard=resharded.outcome[:1024] if resharded else None,
        reshard_failures=resharded.failures if resharded else None,
        reshard_shards=resharded.shards if resharded else None,
        message=(error or activity or "")[:1024] or None,
    )
