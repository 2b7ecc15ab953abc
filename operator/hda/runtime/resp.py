"""A lean asyncio Valkey/Redis client: hiredis packs and parses, we only queue futures.

redis-py's asyncio client packs commands in pure Python and blocks the event loop on large
pipelines (see shared/notes/dataplane.md); this client writes each command (or a whole pipeline)
with one `transport.write` and resolves replies in order from a single reader callback, so any
number of coroutines pipeline over one connection for free.

Every command has a deadline (`RedisAddress.command_timeout`, plus the BLOCK time of a blocking
read). Replies come back in order, so a watchdog only looks at the oldest outstanding command: if
its deadline passed, Valkey is stalled or unreachable, and the connection is dropped with
`CommandTimeoutError` for every waiter. TCP keepalive notices a dead peer on an idle connection.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis

from .topology.sentinel import HostPort, PrimaryNotFoundError, discover_primary

log = logging.getLogger(__name__)

RespValue = Any  # bytes | int | list[RespValue] | None | RespError: what hiredis returns
Arg = bytes | str | int | float


def pack(command: tuple[Arg, ...]) -> bytes:
    """One command in RESP, packed by hiredis (C)."""
    packed: bytes = hiredis.pack_command(cast(Any, command))  # the stub types a 1-tuple
    return packed


class RespError(Exception):
    """An error reply from the server (e.g. `BUSYGROUP`, `NOSCRIPT`)."""


class ConnectionLostError(ConnectionError):
    """The connection closed with commands still waiting for replies."""


class ConnectError(ConnectionError):
    """No connection to Valkey could be made (not up yet, unresolvable, unreachable)."""


class CommandTimeoutError(TimeoutError):
    """A command passed its deadline: Valkey is stalled or unreachable; the connection is gone.
    Whether the command ran is unknown (it may still run when Valkey resumes)."""


DEFAULT_COMMAND_TIMEOUT = 5.0
WATCHDOG_INTERVAL = 0.25
# Keepalive on idle connections: first probe after 15 s, then every 5 s, dead after 3 misses.
KEEPALIVE = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


# Error replies that mean "this server is no longer the primary": drop the connection, so the
# next one asks Sentinel again instead of failing every command on a demoted primary.
NOT_PRIMARY_ERRORS = ("READONLY", "MASTERDOWN")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT  # seconds; blocking reads add their BLOCK
    # Replicated topology: the primary is whichever these Sentinels name `primary_name`.
    sentinels: tuple[HostPort, ...] = ()
    primary_name: str = ""
    # Cluster topology: these nodes give the slot map; each command goes to its key's primary.
    cluster: tuple[HostPort, ...] = ()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        password: str | None = None,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> RedisAddress:
        """`redis://[user:pass@]host:port/db`, or for a replicated topology
        `redis+sentinel://[user:pass@]host:port,host:port/PRIMARY-NAME[/db]` (the Sentinels),
        for a cluster topology `redis+cluster://[user:pass@]host:port,host:port[/0]` (any
        nodes: the rest is discovered); an explicit `password` (from env) wins."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("redis", "valkey", SENTINEL_SCHEME, CLUSTER_SCHEME):
            raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} in {url!r}")
        credentials, _, hosts = parsed.netloc.rpartition("@")
        username, _, url_password = credentials.partition(":")
        path = parsed.path.strip("/").split("/") if parsed.path.strip("/") else []
        sentinels: tuple[HostPort, ...] = ()
        cluster: tuple[HostPort, ...] = ()
        primary_name = ""
        if parsed.scheme == CLUSTER_SCHEME:
            cluster = tuple(_host_port(item, url, 6379) for item in hosts.split(","))
            host, port = cluster[0]
            if path and path != ["0"]:
                raise ValueError(f"Valkey Cluster has only database 0, got {path[0]!r} in {url!r}")
        elif parsed.scheme == SENTINEL_SCHEME:
            sentinels = tuple(_host_port(item, url, 26379) for item in hosts.split(","))
            if not path:
                raise ValueError(f"no primary name after the Sentinels in {url!r}")
            primary_name, path = path[0], path[1:]
            host, port = sentinels[0]  # replaced by the primary on connect
        else:
            host, port = _host_port(hosts or "127.0.0.1", url, 6379)
        if len(path) > 1 or (path and not path[0].isdigit()):
            raise ValueError(f"database must be a number in {url!r}, got {'/'.join(path)!r}")
        return cls(
            host=host,
            port=port,
            db=int(path[0]) if path else 0,
            username=urllib.parse.unquote(username) if username else None,
            password=password
            if password
            else (urllib.parse.unquote(url_password) if url_password else None),
            command_timeout=command_timeout,
            sentinels=sentinels,
            primary_name=primary_name,
            cluster=cluster,
        )

    async def primary(self) -> HostPort:
        """Where to connect now: the Sentinels' current primary, else the address itself."""
        if not self.sentinels:
            return self.host, self.port
        try:
            return await discover_primary(
                self.sentinels,
                self.primary_name,
                self.command_timeout,
                username=self.username,
                password=self.password,
            )
        except PrimaryNotFoundError as error:
            raise ConnectError(str(error)) from error


def _host_port(text: str, url: str, default_port: int) -> HostPort:
    text = text.strip()
    host, _, port = (
        text.rpartition(":") if ":" in text and not text.endswith("]") else (text, "", "")
    )
    if not host:
        raise ValueError(f"empty host in {url!r}")
    if port and not port.isdigit():
        raise ValueError(f"port must be a number in {url!r}, got {port!r}")
    return host.strip("[]"), int(port) if port else default_port


class _ReplyProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        self.waiters: collections.deque[asyncio.Future[RespValue]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()  # loop time, per waiter
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._watchdog: asyncio.TimerHandle | None = None

    def expect(self, futures: list[asyncio.Future[RespValue]], timeout: float) -> None:
        """Register replies to wait for, each due within `timeout` seconds from now."""
        self.waiters.extend(futures)
        self.deadlines.extend(itertools.repeat(self._loop.time() + timeout, len(futures)))
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(WATCHDOG_INTERVAL, self._check_deadline)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if self.closed.done() or not self.waiters:
            return
        if self.deadlines[0] > self._loop.time():
            self._watchdog = self._loop.call_later(WATCHDOG_INTERVAL, self._check_deadline)
            return
        overdue = self._loop.time() - self.deadlines[0]
        self._fail_all(
            CommandTimeoutError(
                f"Valkey did not answer in time (deadline passed {overdue:.1f}s ago)"
            )
        )
        if not self.closed.done():
            self.closed.set_result(None)
        if self.transport is not None:
            self.transport.abort()
        self._wake_drainers()

    def _fail_all(self, error: Exception) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)
        self.deadlines.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            future = waiters.popleft()
            self.deadlines.popleft()
            if not future.done():
                future.set_result(reply)
            if (
                type(reply) is RespError
                and str(reply).startswith(NOT_PRIMARY_ERRORS)
                and self.transport is not None
            ):
                self.transport.close()  # the rest fail as lost; the next connection re-resolves

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ConnectionLostError(f"connection to Valkey lost: {exc}"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_drainers()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    async def drain(self) -> None:
        if self._paused and not self.closed.done():
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter


class RespConnection:
    """One TCP connection; commands from any coroutine are pipelined in call order."""

    def __init__(
        self, protocol: _ReplyProtocol, transport: asyncio.Transport, command_timeout: float
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.command_timeout = command_timeout

    @classmethod
    async def connect(cls, address: RedisAddress) -> RespConnection:
        if address.cluster:  # one connection per primary behind this interface
            from .topology.cluster import ClusterConnection  # noqa: PLC0415 (imports us)

            return await ClusterConnection.open(address)
        loop = asyncio.get_running_loop()
        host, port = await address.primary()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(_ReplyProtocol, host, port), address.command_timeout
            )
        except OSError as error:  # refused, unresolvable, unreachable, timed out
            raise ConnectError(f"cannot connect to Valkey at {host}:{port}: {error}") from error
        assert isinstance(transport, asyncio.Transport)
        _enable_keepalive(transport)
        connection = cls(protocol, transport, address.command_timeout)
        try:
            if address.password is not None:
                if address.username:
                    await connection.execute("AUTH", address.username, address.password)
                else:
                    await connection.execute("AUTH", address.password)
            if address.db:
                await connection.execute("SELECT", address.db)
            if address.sentinels:  # Sentinel may lag a failover by a moment: check the role
                role = await connection.execute("ROLE")
                if role[0] != b"master":
                    raise ConnectError(f"Valkey at {host}:{port} is not a primary (yet)")
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def is_closed(self) -> bool:
        return self._protocol.closed.done()

    def close(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        await self._protocol.closed

    def _send(
        self, payload: bytes, count: int, block_seconds: float = 0.0
    ) -> list[asyncio.Future[RespValue]]:
        if self._protocol.closed.done():
            raise ConnectionLostError("connection to Valkey is closed")
        futures = [self._loop.create_future() for _ in range(count)]
        self._protocol.expect(futures, self.command_timeout + block_seconds)
        self._transport.write(payload)
        return futures

    def send_raw(self, payload: bytes, count: int) -> list[asyncio.Future[RespValue]]:
        """Write pre-packed commands expecting `count` replies (benchmarks)."""
        return self._send(payload, count)

    async def execute(self, *args: Arg, block_seconds: float = 0.0) -> RespValue:
        """Send one command; raise RespError on an error reply. A blocking command passes its
        BLOCK time as `block_seconds`: its deadline is that plus the command timeout."""
        (future,) = self._send(pack(args), 1, block_seconds)
        await self._protocol.drain()
        reply = await future
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def pipeline(self, commands: list[tuple[Arg, ...]]) -> list[RespValue]:
        """Send commands in one write; replies come back in order, errors as RespError values."""
        if not commands:
            return []
        payload = b"".join([pack(command) for command in commands])
        futures = self._send(payload, len(commands))
        await self._protocol.drain()
        return list(await asyncio.gather(*futures))

    async def client_identity(self) -> ClientIdentity:
        """How the server knows this connection (CLIENT INFO): its ID and peer address."""
        info: bytes = await self.execute("CLIENT", "INFO")
        fields = dict(pair.split("=", 1) for pair in info.decode().split() if "=" in pair)
        return ClientIdentity(int(fields["id"]), fields["addr"])


def _enable_keepalive(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE.items():
        option = getattr(socket, name, None)  # Linux names; other systems keep their defaults
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


@dataclass(frozen=True)
class ClientIdentity:
    client_id: int
    addr: str  # ip:port as the server sees it: IDs restart with the server, addresses differ


class FencedConnector:
    """Connections for a consumer whose reads change server state (`XREADGROUP >` assigns entries
    to the consumer): a connection given up on after a deadline may still hold commands in the
    server's socket buffer that run when a stalled Valkey resumes. Each new connection first kills
    the previous one on the server, so whatever the old one did is done before the new one looks
    at the consumer's pending entries, and nothing it sent runs afterwards. A cluster connection
    is many: on each node, its first connection kills the previous cluster connection's ones."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._previous: ClientIdentity | None = None
        self.fence = ClusterFence()

    async def connect(self) -> RespConnection:
        if self.address.cluster:
            from .topology.cluster import ClusterConnection  # noqa: PLC0415 (imports us)

            self.fence.rotate()
            return await ClusterConnection.open(self.address, fence=self.fence)
        connection = await RespConnection.connect(self.address)
        try:
            identity = await connection.client_identity()
            if self._previous is not None:
                await fence_off(connection, [self._previous])
            self._previous = identity
        except BaseException:
            connection.close()
            raise
        return connection


async def fence_off(connection: RespConnection, previous: list[ClientIdentity]) -> None:
    """Kill the given earlier connections on `connection`'s server (gone ones are no error)."""
    for identity in previous:
        try:
            await connection.execute(
                "CLIENT", "KILL", "ID", identity.client_id, "ADDR", identity.addr, "SKIPME", "yes"
            )
        except RespError as error:  # e.g. an ACL without CLIENT KILL: nothing better to do
            log.warning("could not fence the previous connection", extra={"error": str(error)})


@dataclass
class ClusterFence:
    """Connections of the current and the earlier cluster connections of one consumer, by node."""

    previous: dict[HostPort, list[ClientIdentity]] = field(default_factory=dict)
    current: dict[HostPort, list[ClientIdentity]] = field(default_factory=dict)

    def rotate(self) -> None:
        """A new cluster connection starts: everything so far is to be killed on first contact."""
        for node, identities in self.current.items():
            self.previous.setdefault(node, []).extend(identities)
        self.current = {}

    async def enter(self, node: HostPort, connection: RespConnection) -> None:
        """A new connection to `node`: kill the earlier ones there, then remember this one."""
        identity = await connection.client_identity()
        await fence_off(connection, self.previous.pop(node, []))
        self.current.setdefault(node, []).append(identity)


def raise_errors(replies: list[RespValue]) -> list[RespValue]:
    """Raise the first error reply of a pipeline, else return the replies unchanged."""
    for reply in replies:
        if isinstance(reply, RespError):
            raise reply
    return replies


class Reconnecting:
    """A connection that is re-established on demand after Valkey went away."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._connection: RespConnection | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> RespConnection:
        connection = self._connection
        if connection is not None and not connection.is_closed:
            return connection
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await RespConnection.connect(self.address)
            return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
