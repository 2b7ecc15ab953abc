"""A lean asyncio Valkey/Redis client: hiredis packs and parses, we only queue futures.

redis-py's asyncio client packs commands in pure Python and blocks the event loop on large
pipelines (see shared/notes/dataplane.md); this client writes each command (or a whole pipeline)
with one `transport.write` and resolves replies in order from a single reader callback, so any
number of coroutines pipeline over one connection for free.
"""

from __future__ import annotations

import asyncio
import collections
import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import hiredis

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


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None) -> RedisAddress:
        """`redis://[user:pass@]host:port/db`; an explicit `password` (from env) wins."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("redis", "valkey"):
            raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} in {url!r}")
        db_text = parsed.path.lstrip("/")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            db=int(db_text) if db_text else 0,
            username=urllib.parse.unquote(parsed.username) if parsed.username else None,
            password=password
            if password
            else (urllib.parse.unquote(parsed.password) if parsed.password else None),
        )


class _ReplyProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        self.waiters: collections.deque[asyncio.Future[RespValue]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

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
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionLostError(f"connection to Valkey lost: {exc}")
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)
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

    def __init__(self, protocol: _ReplyProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(
        cls, address: RedisAddress, *, connect_seconds: float = 5.0
    ) -> RespConnection:
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(_ReplyProtocol, address.host, address.port), connect_seconds
        )
        assert isinstance(transport, asyncio.Transport)
        connection = cls(protocol, transport)
        if address.password is not None:
            if address.username:
                await connection.execute("AUTH", address.username, address.password)
            else:
                await connection.execute("AUTH", address.password)
        if address.db:
            await connection.execute("SELECT", address.db)
        return connection

    @property
    def is_closed(self) -> bool:
        return self._protocol.closed.done()

    def close(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        await self._protocol.closed

    def _send(self, payload: bytes, count: int) -> list[asyncio.Future[RespValue]]:
        if self._protocol.closed.done():
            raise ConnectionLostError("connection to Valkey is closed")
        futures = [self._loop.create_future() for _ in range(count)]
        self._protocol.waiters.extend(futures)
        self._transport.write(payload)
        return futures

    def send_raw(self, payload: bytes, count: int) -> list[asyncio.Future[RespValue]]:
        """Write pre-packed commands expecting `count` replies (benchmarks)."""
        return self._send(payload, count)

    async def execute(self, *args: Arg) -> RespValue:
        """Send one command; raise RespError on an error reply."""
        (future,) = self._send(pack(args), 1)
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
