"""The output volume fills up under load: nothing acknowledged is torn, lost or written twice."""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
from tests.runtime.conftest import (
    AckingProducers,
    Processes,
    group_idle,
    read_output_events,
    wait_for,
)

from hda.runtime.codec import input_key, output_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.resp import RedisAddress, RespConnection
from hda.runtime.segments import list_segments, scan_segment

pytestmark = pytest.mark.runtime

log = logging.getLogger(__name__)

PARTITIONS = 2
PAD = "x" * 100
PACE_SECONDS = 0.02  # keeps the whole run's output well inside the volume once it is free


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs (we run as root); set up before `processes`, so unmounted after them."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mountpoint)], check=True
    )
    yield mountpoint
    if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(path: Path) -> int:
    """Write until the filesystem refuses even a single byte; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as ballast:
        for chunk in (1 << 20, 1 << 12, 1):
            while count := write_unless_full(ballast, b"\0" * chunk):
                written += count
    return written


def write_unless_full(handle: BinaryIO, data: bytes) -> int:
    try:
        return handle.write(data) or 0
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return 0


async def output_state(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_full_disk_rolls_back_stops_acking_and_resumes_when_space_returns(
    small_disk: Path,
    valkey: EmbeddedValkey,
    processes: Processes,
    write_manifest: Any,
) -> None:
    manifest = write_manifest(
        f"    - {{name: events, partitions: {PARTITIONS}}}\n",
        "  output:\n    sinks:\n      segmentFiles: {maxSegmentBytes: 1Mi}\n",
    )
    ingest_port = processes.ingest(manifest)
    processes.worker(manifest)
    _, output_port = processes.output(manifest, small_disk)
    producers = AckingProducers(
        f"http://127.0.0.1:{ingest_port}/v1/streams/events/events", pad=PAD, pace=PACE_SECONDS
    )
    acked = producers.acked

    redis = await RespConnection.connect(RedisAddress(port=valkey.port))
    outputs = [output_key("events", p) for p in range(PARTITIONS)]
    ballast = small_disk / "ballast"
    async with aiohttp.ClientSession() as session:
        producers.start(session)
        await wait_for(lambda: len(acked) >= 5_000)
        filled = await asyncio.to_thread(fill, ballast)
        assert filled > 0
        filled_at = time.monotonic()

        async def refusing() -> bool:
            state = await output_state(session, output_port)
            return not state["ready"] and "ENOSPC" in state["causes"].get("disk", "")

        await wait_for(refusing, within=30)
        refused_after = time.monotonic() - filled_at
        # while refusing, output acknowledges nothing: its group's pending count only grows
        pending_before = await output_pending(redis, outputs)
        await asyncio.sleep(2)
        assert await output_pending(redis, outputs) >= pending_before > 0
        async with session.get(f"http://127.0.0.1:{output_port}/metrics") as response:
            assert 'errno="ENOSPC"' in await response.text()
        async with session.get(f"http://127.0.0.1:{output_port}/healthz") as response:
            assert response.status == 200

        ballast.unlink()
        freed_at = time.monotonic()
        await wait_for(lambda: output_ready(session, output_port), within=30)
        log.info(
            "full disk: output not ready %.2fs after the disk filled, ready %.2fs after space "
            "returned",
            refused_after,
            time.monotonic() - freed_at,
        )
        resumed_at = len(acked)
        await wait_for(lambda: len(acked) >= resumed_at + 5_000)
        await producers.stop()

    inputs = [input_key("events", p) for p in range(PARTITIONS)]
    await wait_for(lambda: group_idle(redis, inputs, WORKER_GROUP))
    await wait_for(lambda: group_idle(redis, outputs, OUTPUT_GROUP))
    redis.close()
    directory = small_disk / "events"
    for _, path in list_segments(directory):
        data = path.read_bytes()
        assert scan_segment(data).intact_length == len(data), f"{path.name} holds a torn line"
    events, record_ids = read_output_events(directory)
    written = collections.Counter(e["seq"] for e in events)
    assert acked - set(written) == set(), "acknowledged events were lost"
    assert max(written.values()) == 1, "an event was written twice"
    assert len(record_ids) == len(set(record_ids)), "a record was written twice"
    assert all(e["pad"] == PAD for e in events)


async def output_pending(redis: RespConnection, keys: list[str]) -> int:
    total = 0
    for key in keys:
        summary = await redis.execute("XPENDING", key, OUTPUT_GROUP)
        total += int(summary[0])
    return total


async def output_ready(session: aiohttp.ClientSession, port: int) -> bool:
    return bool((await output_state(session, port))["ready"])
