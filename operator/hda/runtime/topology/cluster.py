"""Valkey Cluster behind the RespConnection interface: every command goes to its key's primary.

redis-py's RedisCluster keeps the slot map (CLUSTER SLOTS, refreshed on MOVED); our own wire
(one RespConnection per primary) carries the commands, pipelined per node. A MOVED reply means
the command did not run: the map is refreshed and the command sent again; ASK sends it once to
the importing node after ASKING. Losing any node's connection closes the whole connection, and
the component reconnects as after any Valkey failure, with a fresh map (after a failover it
names the promoted replica).

Every partition's keys share one hash tag, so each command (and each worker commit script) has
its keys in one slot. XREADGROUP over several partitions would span slots (CROSSSLOT), so it is
split into one read per partition: a blocking read runs on the partition's own connection and
stays outstanding across calls; what it returns is handed out by a later call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ..resp import (
    Arg,
    ClientIdentity,
    ClusterFence,
    ConnectError,
    RedisAddress,
    RespConnection,
    RespError,
    RespValue,
)
from .sentinel import HostPort

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
# Commands with no key: sent to every primary (SCRIPT LOAD) or answered per connection (WAITAOF).
EVERY_PRIMARY = frozenset({"SCRIPT"})


def command_key(command: tuple[Arg, ...]) -> Arg:
    """The key a command is routed by (the first one; ours never span slots)."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3]
    if name in ("XINFO", "XGROUP"):
        return command[2]
    if name in ("XREADGROUP", "XREAD"):
        return command[streams_index(command) + 1]
    return command[1]


def streams_index(command: tuple[Arg, ...]) -> int:
    return next(i for i, arg in enumerate(command) if str(arg).upper() == "STREAMS")


def split_read(command: tuple[Arg, ...]) -> list[tuple[Arg, tuple[Arg, ...]]]:
    """An XREADGROUP over several keys as one single-key read per key: [(key, command)]."""
    start = streams_index(command)
    names = command[start + 1 :]
    half = len(names) // 2
    return [
        (key, (*command[: start + 1], key, position))
        for key, position in zip(names[:half], names[half:], strict=True)
    ]


def _redirect(reply: RespValue) -> tuple[str, HostPort] | None:
    """("MOVED" | "ASK", target) for a redirection error reply, else None."""
    if not isinstance(reply, RespError):
        return None
    parts = str(reply).split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK"):
        host, _, port = parts[2].rpartition(":")
        return parts[0], (host, int(port))
    return None


async def _release(topology: RedisCluster) -> None:
    """Close redis-py's own connections: only its slot map is used, and it stays readable."""
    with contextlib.suppress(Exception):  # closing what may be half-open; nothing to report
        await topology.aclose()  # once: marks the client closed (no warning when collected)
        await topology.nodes_manager.aclose()  # after every refresh: the connections it made
        await topology.nodes_manager.aclose("startup_nodes")


class ClusterConnection(RespConnection):
    """Same interface as RespConnection; each command goes to its key's primary."""

    def __init__(
        self, address: RedisAddress, topology: RedisCluster, fence: ClusterFence | None = None
    ) -> None:
        # No super().__init__: there is no single transport; every public method is overridden.
        self.address = address
        self.command_timeout = address.command_timeout
        self._topology = topology
        self._fence = fence
        self._nodes: dict[HostPort, asyncio.Task[RespConnection]] = {}
        self._readers: dict[Arg, RespConnection] = {}  # a partition's blocking-read connection
        self._reads: dict[Arg, asyncio.Task[RespValue]] = {}  # outstanding blocking reads
        self._ready: dict[Arg, list[RespValue]] = {}  # what finished reads returned, unread
        self._dirty: set[RespConnection] = set()  # wrote since the last WAITAOF
        self._refresh_lock = asyncio.Lock()
        self._closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, address: RedisAddress, fence: ClusterFence | None = None
    ) -> ClusterConnection:
        """`fence`: kill, on each node, the connections of the consumer's earlier cluster
        connection before this one sends anything there (see resp.FencedConnector)."""
        topology = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.cluster],
            username=address.username,
            password=address.password,
            socket_timeout=address.command_timeout,
            socket_connect_timeout=address.command_timeout,
        )
        try:
            await topology.initialize()
        except (redis_errors.RedisError, redis_errors.RedisClusterException) as error:
            await _release(topology)
            raise ConnectError(
                f"no Valkey Cluster slot map from {address.cluster}: {error!r}"
            ) from error
        await _release(topology)
        return cls(address, topology, fence)

    # --- lifecycle ---

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    def close(self) -> None:
        if self._closed.done():
            return
        self._closed.set_result(None)
        for task in self._reads.values():
            task.cancel()
        for node in self._nodes.values():
            if node.done() and not node.cancelled() and node.exception() is None:
                node.result().close()
            else:
                node.cancel()
        for reader in self._readers.values():
            reader.close()

    async def wait_closed(self) -> None:
        await self._closed

    async def client_identity(self) -> ClientIdentity:
        raise NotImplementedError("a cluster connection is many connections")

    def send_raw(self, payload: bytes, count: int) -> list[asyncio.Future[RespValue]]:
        raise NotImplementedError("pre-packed commands cannot be routed by key")

    # --- routing ---

    def _owner(self, key: Arg) -> HostPort:
        try:
            node = self._topology.get_node_from_key(
                key.decode() if isinstance(key, bytes) else str(key)
            )
        except redis_errors.RedisClusterException as error:
            raise ConnectError(f"no primary serves key {key!r}: {error}") from error
        if node is None:
            raise ConnectError(f"no primary serves key {key!r}")
        return node.host, int(node.port)

    async def _connect(self, host_port: HostPort) -> RespConnection:
        host, port = host_port
        connection = await RespConnection.connect(
            RedisAddress(
                host=host,
                port=port,
                username=self.address.username,
                password=self.address.password,
                command_timeout=self.address.command_timeout,
            )
        )
        if self._fence is not None:
            try:
                await self._fence.enter(host_port, connection)
            except BaseException:
                connection.close()
                raise
        return connection

    async def _node(self, host_port: HostPort) -> RespConnection:
        if self._closed.done():
            raise ConnectError("cluster connection is closed")
        task = self._nodes.get(host_port)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._connect(host_port))
            self._nodes[host_port] = task
        connection = await task
        if connection.is_closed:
            self.close()
            raise ConnectError(f"connection to {host_port[0]}:{host_port[1]} was lost")
        return connection

    async def _refresh(self) -> None:
        async with self._refresh_lock:
            try:
                await self._topology.nodes_manager.initialize()
            except (redis_errors.RedisError, redis_errors.RedisClusterException) as error:
                raise ConnectError(f"cannot refresh the cluster slot map: {error!r}") from error
            finally:
                await _release(self._topology)

    # --- commands ---

    async def execute(self, *args: Arg, block_seconds: float = 0.0) -> RespValue:
        if str(args[0]).upper() == "XREADGROUP":
            return await self._read(args, block_seconds)
        (reply,) = await self.pipeline([args])
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def pipeline(self, commands: list[tuple[Arg, ...]]) -> list[RespValue]:
        try:
            return await self._pipeline(commands)
        except (ConnectionError, TimeoutError):
            self.close()
            raise

    async def _pipeline(self, commands: list[tuple[Arg, ...]]) -> list[RespValue]:
        replies: list[RespValue] = [None] * len(commands)
        waits = [i for i, c in enumerate(commands) if str(c[0]).upper() == "WAITAOF"]
        todo = [i for i in range(len(commands)) if i not in waits]
        for attempt in range(MAX_REDIRECTS + 1):
            by_node: dict[HostPort, list[int]] = {}
            for i in todo:
                name = str(commands[i][0]).upper()
                if name in EVERY_PRIMARY:
                    for node in self._topology.get_primaries():
                        by_node.setdefault((node.host, int(node.port)), []).append(i)
                elif name == "XREADGROUP":
                    replies[i] = await self._read(commands[i], 0.0)
                else:
                    by_node.setdefault(self._owner(command_key(commands[i])), []).append(i)
            groups = list(by_node.items())
            results = await asyncio.gather(
                *(self._send_to(node, [commands[i] for i in idx]) for node, idx in groups)
            )
            moved: list[int] = []
            for (_, idx), node_replies in zip(groups, results, strict=True):
                for i, reply in zip(idx, node_replies, strict=True):
                    redirect = _redirect(reply)
                    if redirect is None:
                        replies[i] = reply
                    elif redirect[0] == "ASK":
                        replies[i] = await self._ask(redirect[1], commands[i])
                    elif attempt < MAX_REDIRECTS:
                        moved.append(i)
                    else:
                        replies[i] = reply
            if not moved:
                break
            log.info("slots moved; refreshing the cluster map", extra={"commands": len(moved)})
            await self._refresh()
            todo = sorted(set(moved))
        for i in waits:
            replies[i] = await self._wait_aof(commands[i])
        return replies

    async def _send_to(self, node: HostPort, commands: list[tuple[Arg, ...]]) -> list[RespValue]:
        connection = await self._node(node)
        self._dirty.add(connection)
        return await connection.pipeline(commands)

    async def _ask(self, target: HostPort, command: tuple[Arg, ...]) -> RespValue:
        """A slot being imported: the target runs the command only right after ASKING."""
        connection = await self._node(target)
        self._dirty.add(connection)
        return (await connection.pipeline([("ASKING",), command]))[1]

    async def _wait_aof(self, command: tuple[Arg, ...]) -> RespValue:
        """WAITAOF on every connection that wrote since the last one: the least of each count."""
        dirty = [c for c in self._dirty if not c.is_closed]
        self._dirty.clear()
        if not dirty:
            return [int(command[1]), int(command[2])]  # nothing written: nothing to wait for
        results = await asyncio.gather(*(c.pipeline([command]) for c in dirty))
        counts: list[Any] = []
        for (reply,) in results:
            if isinstance(reply, RespError):
                return reply
            counts.append(reply)
        return [min(int(c[0]) for c in counts), min(int(c[1]) for c in counts)]

    # --- reads ---

    async def _read(self, command: tuple[Arg, ...], block_seconds: float) -> RespValue:
        """XREADGROUP as one read per key; a blocking one waits for the first key with entries."""
        try:
            if not block_seconds:
                parts = split_read(command)
                replies = await asyncio.gather(*(self._read_one(k, c, 0.0) for k, c in parts))
                merged = [item for reply in replies if reply for item in reply]
                return merged or None
            return await self._blocking_read(command, block_seconds)
        except (ConnectionError, TimeoutError):
            self.close()
            raise

    async def _blocking_read(self, command: tuple[Arg, ...], block_seconds: float) -> RespValue:
        parts = split_read(command)
        for key, single in parts:
            if key not in self._reads and key not in self._ready:
                self._reads[key] = asyncio.ensure_future(self._read_one(key, single, block_seconds))
        if not self._ready and self._reads:
            await asyncio.wait(
                list(self._reads.values()),
                timeout=block_seconds + self.command_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        for key, task in list(self._reads.items()):
            if task.done():
                del self._reads[key]
                reply = task.result()  # a failed read fails the whole connection
                if reply:
                    self._ready[key] = reply
        merged = [item for key, _ in parts for item in self._ready.pop(key, [])]
        return merged or None

    async def _read_one(self, key: Arg, command: tuple[Arg, ...], block_seconds: float) -> Any:
        for attempt in range(MAX_REDIRECTS + 1):
            reader = self._readers.get(key)
            if reader is None or reader.is_closed:
                reader = await self._connect(self._owner(key))
                self._readers[key] = reader
            self._dirty.discard(reader)  # blocked from now on: WAITAOF must not queue behind
            try:
                reply = await reader.execute(*command, block_seconds=block_seconds)
            except RespError as error:
                if _redirect(error) is None or attempt == MAX_REDIRECTS:
                    raise
                reader.close()
                del self._readers[key]
                await self._refresh()
                continue
            if reply:
                self._dirty.add(reader)  # it assigned entries: WAITAOF covers that too
            return reply
        raise AssertionError("unreachable")
