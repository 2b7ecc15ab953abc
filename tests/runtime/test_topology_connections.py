"""Connections to replicated and cluster topologies: a demoted primary's READONLY drops the
connection, no healthy primary is a connect error naming Sentinel, and a consumer's new cluster
connection fences off its previous one on every node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hda.runtime.codec import input_key
from hda.runtime.embedded import free_port
from hda.runtime.resp import (
    ConnectError,
    FencedConnector,
    RedisAddress,
    RespConnection,
    RespError,
)
from hda.runtime.topology.local import PRIMARY_NAME, ClusterValkey, ReplicatedValkey

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


def require_password(topology: ReplicatedValkey, password: str) -> None:
    """What the operator's pods do: every server and every Sentinel asks for `password`."""
    for node in topology.nodes:
        with redis.Redis(port=node.port) as client:
            client.config_set("masterauth", password)
            client.config_set("requirepass", password)
    for sentinel in topology.sentinels:
        with redis.Redis(port=sentinel.port) as client:
            client.execute_command("SENTINEL", "SET", PRIMARY_NAME, "auth-pass", password)
            client.execute_command("ACL", "SETUSER", "default", "on", "resetpass", f">{password}")


async def test_sentinels_that_require_the_password_are_asked_with_it(
    replicated: ReplicatedValkey,
) -> None:
    require_password(replicated, "s3cret")
    connection = await RespConnection.connect(
        RedisAddress.from_url(replicated.url, password="s3cret")
    )
    try:
        role = await connection.execute("ROLE")
    finally:
        connection.close()
    assert role[0] == b"master"
    with pytest.raises(ConnectError, match="AuthenticationError"):
        await RespConnection.connect(RedisAddress.from_url(replicated.url))


async def test_unknown_primary_name_is_a_connect_error(replicated: ReplicatedValkey) -> None:
    url = replicated.url.replace("/hda/", "/other/")
    with pytest.raises(ConnectError, match="no primary 'other'"):
        await RespConnection.connect(RedisAddress.from_url(url))


async def test_new_cluster_connection_fences_off_the_previous_one(tmp_path: Path) -> None:
    cluster = ClusterValkey(tmp_path / "valkey", shards=3, replicas=0)
    cluster.start()
    try:
        connector = FencedConnector(RedisAddress.from_url(cluster.url))
        keys = [input_key("events", p) for p in range(4)]
        first = await connector.connect()
        await first.pipeline([("XLEN", key) for key in keys])  # a connection on some nodes
        second = await connector.connect()
        await second.pipeline([("XLEN", key) for key in keys])  # kills those first
        with pytest.raises(ConnectionError):
            await first.pipeline([("XLEN", key) for key in keys])
        assert first.is_closed
        assert await second.pipeline([("XLEN", key) for key in keys]) == [0, 0, 0, 0]
        second.close()
    finally:
        cluster.kill()
