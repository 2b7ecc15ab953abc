"""Talking to the Valkey nodes and sentinels of a replicated or cluster buffer: `probe_buffer`
asks every node about itself (and the sentinels for the primary); `execute` carries out one
action that `buffer_topology` decided. Every call has a deadline; failures become states
(unreachable) or exceptions for the caller to log, never hangs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from hda.api.v1alpha1 import Topology
from hda.runtime.topology.nodes import SlotRange, myself, parse_cluster_nodes
from hda.runtime.topology.reshard import ProgressCallback, reshard, slot_migrations
from hda.specs.names import VALKEY_MASTER_NAME

from .buffer_topology import (
    AssignSlots,
    BufferProbe,
    DeletePod,
    Failover,
    ForgetNodes,
    Meet,
    NodeAddress,
    NodeState,
    Replicate,
    Reshard,
    Role,
    Wait,
)
from .kube import Kind

log = logging.getLogger("hda.controller")

POD_KIND = Kind("v1", "Pod", "pods", True)


class PodDeleter(Protocol):
    """What deleting a pod needs of the Kubernetes API (`Kube`)."""

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool: ...


# Sentinels that must name the same primary before the operator believes them (of 3).
SENTINEL_AGREEMENT = 2


def _client(host: str, port: int, password: str | None, seconds: float) -> redis.Redis:
    # No retry: a dead pod costs one connect timeout, not several (the operator asks again on
    # its next probe or pass anyway).
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=seconds,
        socket_timeout=seconds,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


async def _command(client: redis.Redis, *args: str | int) -> Any:
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """One node's CLUSTER NODES, as far as the operator needs it."""

    follows_id: str | None  # the ID this node replicates (None for a primary)
    slot_ranges: tuple[SlotRange, ...]  # the slots it serves
    down: tuple[str, ...]  # IDs of the nodes it sees failing or disconnected
    down_serving: tuple[str, ...]  # of those, the ones it sees serving slots


def cluster_view(text: str) -> ClusterView:
    """From CLUSTER NODES: what this node replicates and serves, and who it sees down;
    ValueError (naming the line) on a malformed reply."""
    nodes = parse_cluster_nodes(text)
    me = myself(nodes)
    down = [node for node in nodes if not node.myself and node.seen_down]
    return ClusterView(
        follows_id=me.follows_id,
        slot_ranges=me.slot_ranges,
        down=tuple(node.node_id for node in down),
        down_serving=tuple(node.node_id for node in down if node.slot_ranges),
    )


def _info_field(info: dict[str, Any], name: str) -> str:
    return str(info.get(name, ""))


async def _probe_node(
    topology: Topology, address: NodeAddress, password: str | None, seconds: float
) -> NodeState:
    client = _client(address.host, address.port, password, seconds)
    try:
        async with asyncio.timeout(seconds * 2):
            info = await client.info("replication")
            role: Role = "primary" if _info_field(info, "role") == "master" else "replica"
            follows = None
            link_up = False
            if role == "replica":
                follows = (_info_field(info, "master_host"), int(info.get("master_port", 0)))
                link_up = (
                    _info_field(info, "master_link_status") == "up"
                    and int(info.get("master_sync_in_progress", 0)) == 0
                )
            state = NodeState(pod=address.pod, role=role, follows=follows, link_up=link_up)
            if topology != "cluster":
                return state
            node_id = str(await _command(client, "CLUSTER", "MYID"))
            cluster_info = await client.cluster("INFO")
            view = cluster_view(str(await _command(client, "CLUSTER", "NODES")))
            exports = await _running_exports(client) if role == "primary" else ()
            return NodeState(
                pod=address.pod,
                role=role,
                follows=follows,
                link_up=link_up,
                node_id=node_id,
                known_nodes=int(cluster_info.get("cluster_known_nodes", 0)),
                slots=sum(last - first + 1 for first, last in view.slot_ranges),
                slot_ranges=view.slot_ranges,
                slots_assigned=int(cluster_info.get("cluster_slots_assigned", 0)),
                follows_id=view.follows_id,
                peers_down=view.down,
                peers_serving=view.down_serving,
                exports=exports,
            )
    except ValueError as error:  # it answered, but not in a form we read: say so in status
        log.warning("Valkey node reply unreadable", extra={"pod": address.pod, "error": str(error)})
        return NodeState(pod=address.pod, reachable=False, reply_error=str(error))
    except (OSError, RedisError, TimeoutError) as error:
        log.debug("Valkey node probe failed", extra={"pod": address.pod, "error": repr(error)})
        return NodeState(pod=address.pod, reachable=False)
    finally:
        await client.aclose()


async def _running_exports(client: redis.Redis) -> tuple[str, ...]:
    """The slot migrations this primary runs as their source, described for status; none on a
    Valkey without atomic slot migration (before 9.0), which cannot be running one."""
    try:
        reply = await _command(client, "CLUSTER", "GETSLOTMIGRATIONS")
    except ResponseError as error:
        if "unknown subcommand" not in str(error).lower():
            raise
        return ()
    return tuple(
        f"slots {m.ranges} to {m.target} ({m.state})"
        for m in slot_migrations(reply)
        if m.operation == "EXPORT" and m.running
    )


async def _ask_sentinel(
    host: str, port: int, password: str | None, seconds: float
) -> tuple[str, int] | None:
    client = _client(host, port, password, seconds)
    try:
        async with asyncio.timeout(seconds * 2):
            answer = await _command(
                client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", VALKEY_MASTER_NAME
            )
    except (OSError, RedisError, TimeoutError) as error:
        log.debug("sentinel probe failed", extra={"host": host, "error": repr(error)})
        return None
    finally:
        await client.aclose()
    if not answer:
        return None
    primary_host, primary_port = answer
    return (str(primary_host), int(primary_port))


async def probe_buffer(
    topology: Topology,
    nodes: Sequence[NodeAddress],
    *,
    sentinels: Sequence[tuple[str, int]] = (),
    password: str | None,
    seconds: float = 2.0,
) -> BufferProbe:
    """Every node's view of itself, and the primary at least 2 sentinels agree on (all asked at
    once: a probe takes as long as its slowest answer)."""
    states, answers = await asyncio.gather(
        asyncio.gather(*(_probe_node(topology, a, password, seconds) for a in nodes)),
        asyncio.gather(*(_ask_sentinel(host, port, password, seconds) for host, port in sentinels)),
    )
    votes = Counter(answer for answer in answers if answer is not None)
    agreed = [primary for primary, count in votes.most_common(1) if count >= SENTINEL_AGREEMENT]
    unreadable = [f"{state.pod}: {state.reply_error}" for state in states if state.reply_error]
    error = None
    if unreadable:
        error = "unreadable Valkey reply from " + "; ".join(unreadable)
    elif not any(state.reachable for state in states):
        error = "no Valkey pod reachable"
    elif sentinels and not agreed:
        error = f"fewer than {SENTINEL_AGREEMENT} sentinels agree on a primary"
    return BufferProbe(
        nodes=tuple(states), sentinel_primary=agreed[0] if agreed else None, error=error
    )


async def _resolve(host: str) -> str:
    """An IP of `host`: CLUSTER MEET takes no names."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


Action = Wait | Meet | AssignSlots | Replicate | Failover | DeletePod | ForgetNodes | Reshard


async def execute(
    action: Action,
    nodes: Sequence[NodeAddress],
    *,
    sentinels: Sequence[tuple[str, int]] = (),
    password: str | None,
    kube: PodDeleter | None = None,
    namespace: str = "",
    seconds: float = 5.0,
    reshard_progress: ProgressCallback | None = None,
) -> None:
    """Carry out one action; raises when Valkey, a sentinel or the API refuses it.
    `reshard_progress` hears how far a resharding is."""
    if isinstance(action, Wait):
        return
    if isinstance(action, DeletePod):
        if kube is None:
            raise RuntimeError(f"deleting pod {action.pod} needs the Kubernetes API")
        await kube.delete(POD_KIND, namespace, action.pod)
        return
    if isinstance(action, Failover) and sentinels:
        await _sentinel_failover(sentinels, password, seconds)
        return
    if isinstance(action, ForgetNodes):
        await _forget(action, nodes, password, seconds)
        return
    if isinstance(action, Reshard):
        seed = next(a for a in nodes if a.pod == action.seed)
        await reshard(
            (seed.host, seed.port),
            keep=list(action.keep),
            password=password,
            progress=reshard_progress,
        )
        return
    pod = action.replica if isinstance(action, Failover) else action.pod
    address = next(a for a in nodes if a.pod == pod)
    client = _client(address.host, address.port, password, seconds)
    try:
        async with asyncio.timeout(seconds * 2):
            if isinstance(action, Meet):
                ip = await _resolve(action.target.host)
                await _command(client, "CLUSTER", "MEET", ip, action.target.port)
            elif isinstance(action, AssignSlots):
                await _command(client, "CLUSTER", "ADDSLOTSRANGE", action.first, action.last)
            elif isinstance(action, Replicate):
                await _command(client, "CLUSTER", "REPLICATE", action.primary_id)
            else:
                await _command(client, "CLUSTER", "FAILOVER")
    finally:
        await client.aclose()


# How long a planned Sentinel failover holds the old primary's writes: the switch takes a second
# or two; the held writes then fail on what is a replica by then, unacknowledged.
FAILOVER_WRITE_PAUSE_MS = 10_000

# Valkey's answer to forgetting a node it does not know: nothing to do there.
_UNKNOWN_NODE = "unknown node"


async def _forget(
    action: ForgetNodes, nodes: Sequence[NodeAddress], password: str | None, seconds: float
) -> None:
    """FORGET on every node first (within the 60 s a FORGET bans the ID from gossip), then
    RESET HARD the removed nodes so that they cannot teach the others about themselves again."""
    by_pod = {a.pod: a for a in nodes}
    for pod in (*action.on, *action.reset):
        address = by_pod[pod]
        client = _client(address.host, address.port, password, seconds)
        try:
            async with asyncio.timeout(seconds * 2):
                if pod in action.on:
                    for node_id in action.node_ids:
                        try:
                            await _command(client, "CLUSTER", "FORGET", node_id)
                        except RedisError as error:
                            if _UNKNOWN_NODE not in str(error).lower():
                                raise
                else:
                    await _command(client, "CLUSTER", "RESET", "HARD")
        finally:
            await client.aclose()


async def _pause_writes(
    sentinels: Sequence[tuple[str, int]], password: str | None, seconds: float
) -> None:
    """Hold writes on the primary the sentinels name for FAILOVER_WRITE_PAUSE_MS: a write it
    took after the promotion, confirmed by the replica not promoted, would be lost when that
    replica resyncs from the new primary. Held writes fail once it is a replica (READONLY),
    unacknowledged, and their clients reconnect to the new primary."""
    for host, port in sentinels:
        primary = await _ask_sentinel(host, port, password, seconds)
        if primary is None:
            continue
        client = _client(primary[0], primary[1], password, seconds)
        try:
            async with asyncio.timeout(seconds * 2):
                await _command(client, "CLIENT", "PAUSE", FAILOVER_WRITE_PAUSE_MS, "WRITE")
                return
        except (OSError, RedisError, TimeoutError) as error:
            log.warning("could not pause writes before a failover", extra={"error": str(error)})
            return
        finally:
            await client.aclose()


async def _sentinel_failover(
    sentinels: Sequence[tuple[str, int]], password: str | None, seconds: float
) -> None:
    """`SENTINEL FAILOVER` through the first sentinel that accepts it, with the primary's
    writes paused first (`_pause_writes`)."""
    await _pause_writes(sentinels, password, seconds)
    errors: list[str] = []
    for host, port in sentinels:
        client = _client(host, port, password, seconds)
        try:
            async with asyncio.timeout(seconds * 2):
                await _command(client, "SENTINEL", "FAILOVER", VALKEY_MASTER_NAME)
                return
        except (OSError, RedisError, TimeoutError) as error:
            errors.append(f"{host}:{port}: {error}")
        finally:
            await client.aclose()
    raise RuntimeError("no sentinel accepted SENTINEL FAILOVER: " + "; ".join(errors))
