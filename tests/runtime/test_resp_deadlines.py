"""The Valkey client against a real, SIGSTOPped server: deadlines, keepalive and fencing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import (
    CommandTimeoutError,
    ConnectError,
    FencedConnector,
    RedisAddress,
    RespConnection,
)

pytestmark = pytest.mark.runtime


@pytest.fixture
def stopped(valkey: EmbeddedValkey) -> Iterator[EmbeddedValkey]:
    """Valkey frozen by SIGSTOP (its kernel still accepts connections and buffers requests)."""
    assert valkey.process is not None
    os.kill(valkey.process.pid, signal.SIGSTOP)
    yield valkey
    os.kill(valkey.process.pid, signal.SIGCONT)


async def test_command_past_its_deadline_fails_and_drops_the_connection(
    valkey: EmbeddedValkey,
) -> None:
    connection = await RespConnection.connect(RedisAddress(port=valkey.port, command_timeout=0.5))
    assert await connection.execute("PING") == b"PONG"
    assert valkey.process is not None
    os.kill(valkey.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ping = asyncio.ensure_future(connection.execute("PING"))
        other = asyncio.ensure_future(connection.pipeline([("PING",), ("PING",)]))
        with pytest.raises(CommandTimeoutError):
            await ping
        with pytest.raises(CommandTimeoutError):
            await other  # everything behind the overdue command fails with it
        waited = time.monotonic() - started
    finally:
        os.kill(valkey.process.pid, signal.SIGCONT)
    assert 0.5 <= waited < 2.0
    assert connection.is_closed


async def test_blocking_read_may_take_its_block_time_plus_the_deadline(
    valkey: EmbeddedValkey,
) -> None:
    connection = await RespConnection.connect(RedisAddress(port=valkey.port, command_timeout=0.3))
    reply = await connection.execute(
        "XREAD", "BLOCK", 1000, "STREAMS", "nothing", "$", block_seconds=1
    )
    assert reply is None
    assert not connection.is_closed
    connection.close()


async def test_connection_has_tcp_keepalive(valkey: EmbeddedValkey) -> None:
    connection = await RespConnection.connect(RedisAddress(port=valkey.port))
    sock = connection._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
    connection.close()


async def test_connect_to_a_stalled_server_times_out(stopped: EmbeddedValkey) -> None:
    address = RedisAddress(port=stopped.port, command_timeout=0.3, password="x")  # AUTH waits
    with pytest.raises(CommandTimeoutError):
        await RespConnection.connect(address)


async def test_connect_where_nothing_listens_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
            await RespConnection.connect(RedisAddress(port=port))


async def test_fenced_connector_kills_the_connection_it_replaces(valkey: EmbeddedValkey) -> None:
    connector = FencedConnector(RedisAddress(port=valkey.port))
    first = await connector.connect()
    second = await connector.connect()
    await asyncio.wait_for(first.wait_closed(), 5)  # the server closed it
    assert await second.execute("PING") == b"PONG"
    third = await connector.connect()
    await asyncio.wait_for(second.wait_closed(), 5)
    assert await third.execute("PING") == b"PONG"
    third.close()
