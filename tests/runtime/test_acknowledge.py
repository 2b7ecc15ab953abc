"""`acknowledge: replica`: ingest answers 202 only once a replica's AOF has the events; while no
replica can confirm, it answers 503 with Retry-After and accepts nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.runtime.conftest import Processes

from hda.api.v1alpha1 import load_manifest
from hda.runtime.codec import input_key
from hda.runtime.resp import RedisAddress, RespConnection
from hda.runtime.topology.local import FailoverSettings, ReplicatedValkey, local_buffer

pytestmark = pytest.mark.runtime


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedValkey]:
    topology = ReplicatedValkey(tmp_path / "valkey", replicas=1, appendfsync="always")
    topology.start()
    yield topology
    for node in topology.nodes:  # never leave a stopped process behind
        if node.process is not None:
            os.kill(node.process.pid, signal.SIGCONT)
    topology.kill()


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    async with session.post(url, json={"seq": 1}) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def test_replica_acknowledge_refuses_while_no_replica_confirms(
    replicated: ReplicatedValkey, tmp_path: Path, write_manifest: Any
) -> None:
    manifest = write_manifest(
        "    - {name: events, partitions: 1}\n",
        "  redis: {topology: replicated, replicas: 1, acknowledge: replica}\n",
    )
    processes = Processes(tmp_path, replicated)
    try:
        port = processes.ingest(manifest)
        url = f"http://127.0.0.1:{port}/v1/streams/events/events"
        (replica,) = [node for node in replicated.nodes if node is not replicated.primary()]
        assert replica.process is not None
        async with aiohttp.ClientSession() as session:
            assert (await post(session, url))[0] == 202
            os.kill(replica.process.pid, signal.SIGSTOP)
            status, retry_after = await post(session, url)
            assert (status, retry_after is not None) == (503, True)
            os.kill(replica.process.pid, signal.SIGCONT)
            assert (await post(session, url))[0] == 202
    finally:
        processes.stop_all()


async def test_replica_acknowledge_stores_nothing_on_a_primary_left_without_a_replica(
    tmp_path: Path, write_manifest: Any
) -> None:
    """Built as `hda run` builds it (min-replicas-to-write 1): with its replica gone, the primary
    refuses the write before storing it, so a refusal really means nothing was written."""
    manifest = write_manifest(
        "    - {name: events, partitions: 1}\n",
        "  redis: {topology: replicated, replicas: 1, acknowledge: replica}\n",
    )
    spec = load_manifest(manifest.read_text(), source=str(manifest)).spec.redis
    topology = local_buffer(spec, tmp_path / "valkey", "always", FailoverSettings())
    assert isinstance(topology, ReplicatedValkey)
    topology.start()
    processes = Processes(tmp_path, topology)
    try:
        port = processes.ingest(manifest)
        url = f"http://127.0.0.1:{port}/v1/streams/events/events"
        (replica,) = [node for node in topology.nodes if node is not topology.primary()]
        async with aiohttp.ClientSession() as session:
            assert (await post(session, url))[0] == 202
            replica.kill()
            status, retry_after = await post(session, url)
        primary = await RespConnection.connect(RedisAddress.from_url(topology.primary().url))
        stored = int(await primary.execute("XLEN", input_key("events", 0)))
        primary.close()
        assert (status, retry_after is not None) == (503, True)
        assert stored == 1, "the refused write was stored on the primary"
    finally:
        processes.stop_all()
        topology.kill()


async def test_a_batch_stored_then_refused_is_stored_once_when_sent_again_with_its_key(
    replicated: ReplicatedValkey, tmp_path: Path, write_manifest: Any
) -> None:
    """The replica is stopped, not gone: the primary stores the write, WAITAOF times out and
    ingest answers 503. The producer's resend with the same Idempotency-Key, once the replica
    is back, gets the first write's receipt, and the stream holds the batch once."""
    manifest = write_manifest(
        "    - {name: events, partitions: 1}\n",
        "  redis: {topology: replicated, replicas: 1, acknowledge: replica}\n",
    )
    processes = Processes(tmp_path, replicated)
    try:
        port = processes.ingest(manifest)
        url = f"http://127.0.0.1:{port}/v1/streams/events/events"
        headers = {"Idempotency-Key": "batch-1"}
        (replica,) = [node for node in replicated.nodes if node is not replicated.primary()]
        assert replica.process is not None
        async with aiohttp.ClientSession() as session:
            os.kill(replica.process.pid, signal.SIGSTOP)
            async with session.post(url, json={"seq": 1}, headers=headers) as refused:
                assert refused.status == 503
            os.kill(replica.process.pid, signal.SIGCONT)
            async with session.post(url, json={"seq": 1}, headers=headers) as resent:
                assert resent.status == 202
                assert resent.headers.get("Idempotent-Replayed") == "true"
        primary = await RespConnection.connect(RedisAddress.from_url(replicated.primary().url))
        stored = int(await primary.execute("XLEN", input_key("events", 0)))
        primary.close()
        assert stored == 1
    finally:
        processes.stop_all()
