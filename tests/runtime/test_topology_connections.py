"""Connections to replicated topologies: a demoted primary's READONLY drops the connection, and
no healthy primary is a connect error naming Sentinel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hda.runtime.embedded import free_port
from hda.runtime.resp import ConnectError, RedisAddress, RespConnection, RespError
from hda.runtime.topology.local import ReplicatedValkey

pytestmark = pytest.mark.runtime


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedValkey]:
    topology = ReplicatedValkey(tmp_path / "valkey", replicas=1)
    topology.start()
    yield topology
    topology.kill()


async def test_readonly_reply_drops_the_connection(replicated: ReplicatedValkey) -> None:
    (replica,) = [node for node in replicated.nodes if node is not replicated.primary()]
    connection = await RespConnection.connect(RedisAddress(port=replica.port))
    with pytest.raises(RespError, match="READONLY"):
        await connection.execute("SET", "k", "v")
    await asyncio.wait_for(connection.wait_closed(), 5)  # the next connection re-resolves


async def test_sentinel_address_connects_to_the_primary(replicated: ReplicatedValkey) -> None:
    connection = await RespConnection.connect(RedisAddress.from_url(replicated.url))
    try:
        role = await connection.execute("ROLE")
        port = int((await connection.execute("CONFIG", "GET", "port"))[1])
    finally:
        connection.close()
    assert (role[0], port) == (b"master", replicated.primary().port)


async def test_no_sentinel_answering_is_a_connect_error() -> None:
    address = RedisAddress.from_url(
        f"redis+sentinel://127.0.0.1:{free_port()}/hda/0", command_timeout=1.0
    )
    with pytest.raises(ConnectError, match="Sentinel found no primary 'hda'"):
        await RespConnection.connect(address)


async def test_unknown_primary_name_is_a_connect_error(replicated: ReplicatedValkey) -> None:
    url = replicated.url.replace("/hda/", "/other/")
    with pytest.raises(ConnectError, match="no primary 'other'"):
        await RespConnection.connect(RedisAddress.from_url(url))
