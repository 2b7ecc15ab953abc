"""`acknowledge: replica`: ingest answers 202 only once a replica's AOF has the events; while no
replica can confirm, it answers 503 with Retry-After. The topology is built from the manifest as
`hda run` builds it (min-replicas-to-write 1 under `replica`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.runtime.conftest import Processes

from hda.api.v1alpha1 import load_manifest
from hda.runtime.codec import input_key
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import RedisAddress, RespConnection
from hda.runtime.topology.local import FailoverSettings, ReplicatedValkey, local_buffer

pytestmark = pytest.mark.runtime


@dataclass
class ReplicaAcknowledged:
    topology: ReplicatedValkey
    url: str  # the ingest endpoint of stream `events`

    @property
    def replica(self) -> EmbeddedValkey:
        (replica,) = [n for n in self.topology.nodes if n is not self.topology.primary()]
        return replica

    @property
    def replica_pid(self) -> int:
        process = self.replica.process
        assert process is not None
        return process.pid

    async def stored(self) -> int:
        """Entries in the stream's only partition, on the primary."""
        primary = await RespConnection.connect(RedisAddress.from_url(self.topology.primary().url))
        try:
            return int(await primary.execute("XLEN", input_key("events", 0)))
        finally:
            primary.close()


@pytest.fixture
def pipeline(tmp_path: Path, write_manifest: Any) -> Iterator[ReplicaAcknowledged]:
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
        yield ReplicaAcknowledged(topology, f"http://127.0.0.1:{port}/v1/streams/events/events")
    finally:
        processes.stop_all()
        for node in topology.nodes:  # never leave a stopped process behind
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)
        topology.kill()


async def post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str | None, str | None]:
    """(status, Retry-After, Idempotent-Replayed) of a one-event POST."""
    async with session.post(url, json={"seq": 1}, headers=headers) as response:
        await response.read()
        return (
            response.status,
            response.headers.get("Retry-After"),
            response.headers.get("Idempotent-Replayed"),
        )


async def test_replica_acknowledge_refuses_while_no_replica_confirms(
    pipeline: ReplicaAcknowledged,
) -> None:
    pid = pipeline.replica_pid
    async with aiohttp.ClientSession() as session:
        assert (await post(session, pipeline.url))[0] == 202
        os.kill(pid, signal.SIGSTOP)
        status, retry_after, _ = await post(session, pipeline.url)
        assert (status, retry_after is not None) == (503, True)
        os.kill(pid, signal.SIGCONT)
        assert (await post(session, pipeline.url))[0] == 202


async def test_replica_acknowledge_stores_nothing_on_a_primary_left_without_a_replica(
    pipeline: ReplicaAcknowledged,
) -> None:
    """With its replica gone, the primary refuses the write before storing it
    (min-replicas-to-write 1), so this refusal means nothing was written."""
    async with aiohttp.ClientSession() as session:
        assert (await post(session, pipeline.url))[0] == 202
        pipeline.replica.kill()
        status, retry_after, _ = await post(session, pipeline.url)
    assert (status, retry_after is not None) == (503, True)
    assert await pipeline.stored() == 1, "the refused write was stored on the primary"


async def test_a_batch_stored_then_refused_is_stored_once_when_sent_again_with_its_key(
    pipeline: ReplicaAcknowledged,
) -> None:
    """The replica is stopped, not gone (it still counts for min-replicas-max-lag): the primary
    stores the write, WAITAOF times out and ingest answers 503. The resend with the same
    Idempotency-Key, once the replica is back, gets the first write's receipt, and the stream
    holds the batch once."""
    pid = pipeline.replica_pid
    headers = {"Idempotency-Key": "batch-1"}
    async with aiohttp.ClientSession() as session:
        os.kill(pid, signal.SIGSTOP)
        refused = await post(session, pipeline.url, headers)
        os.kill(pid, signal.SIGCONT)
        resent = await post(session, pipeline.url, headers)
    assert refused[0] == 503
    assert (resent[0], resent[2]) == (202, "true")
    assert await pipeline.stored() == 1
