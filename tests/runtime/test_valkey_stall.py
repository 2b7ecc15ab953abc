"""Valkey SIGSTOPped under load: readiness tracks the stall, liveness does not, nothing is lost."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from hda.runtime.embedded import EmbeddedValkey, free_port
from hda.runtime.resp import RedisAddress, RespConnection

pytestmark = pytest.mark.runtime

log = logging.getLogger(__name__)

PARTITIONS = 2
STALL_SECONDS = 30.0
DETECTION_LIMIT_SECONDS = 10.0


@dataclass
class Probe:
    at: float
    ready: int | None  # HTTP status, None: no answer
    healthy: int | None


async def status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def watch(
    session: aiohttp.ClientSession, port: int, probes: list[Probe], stop: asyncio.Event
) -> None:
    base = f"http://127.0.0.1:{port}"
    while not stop.is_set():
        ready, healthy = await asyncio.gather(
            status(session, f"{base}/readyz"), status(session, f"{base}/healthz")
        )
        probes.append(Probe(time.monotonic(), ready, healthy))
        await asyncio.sleep(0.1)


async def test_stalled_valkey_turns_everyone_not_ready_then_ready_and_loses_nothing(
    valkey: EmbeddedValkey, processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest(f"    - {{name: events, partitions: {PARTITIONS}}}\n")
    worker_port = free_port()
    ports = {
        "ingest": processes.ingest(manifest),
        "worker": worker_port,
        "output": processes.output(manifest, tmp_path / "data")[1],
    }
    processes.worker(manifest, "worker-0", "--port", str(worker_port))
    producers = AckingProducers(f"http://127.0.0.1:{ports['ingest']}/v1/streams/events/events")
    acked, outcomes = producers.acked, producers.outcomes
    stop = asyncio.Event()  # ends the probe watchers

    probes: dict[str, list[Probe]] = {name: [] for name in ports}
    async with aiohttp.ClientSession() as session:
        await wait_for(lambda: status_is(session, ports["worker"], 200), within=30)
        watchers = [
            asyncio.create_task(watch(session, port, probes[name], stop))
            for name, port in ports.items()
        ]
        producers.start(session)
        await wait_for(lambda: len(acked) >= 10_000)
        assert valkey.process is not None
        os.kill(valkey.process.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            await asyncio.sleep(STALL_SECONDS)
        finally:
            os.kill(valkey.process.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        acked_at_resume = len(acked)
        for seen in probes.values():
            await wait_for(lambda seen=seen: first_at(seen, resumed_at, 200), within=30)
        await wait_for(lambda: len(acked) >= acked_at_resume + 10_000)
        stop.set()
        await producers.stop()
        await asyncio.gather(*watchers)

    figures: dict[str, tuple[float, float]] = {}
    for name, seen in probes.items():
        assert all(p.healthy == 200 for p in seen), f"{name}'s liveness failed during the stall"
        before = [p for p in seen if p.at < stopped_at]
        assert before, f"{name} was never probed before the stall"
        assert before[-1].ready == 200, f"{name} was not ready before the stall"
        timeline = [(round(p.at - stopped_at, 1), p.ready) for p in seen]
        went_down = first_at(seen, stopped_at, 503)
        assert went_down is not None, f"{name} stayed ready through the stall: {timeline}"
        came_back = first_at(seen, resumed_at, 200)
        assert came_back is not None, f"{name} never turned ready again: {timeline}"
        assert all(p.ready == 503 for p in seen if went_down <= p.at < resumed_at), (
            f"{name} turned ready while Valkey was still stopped"
        )
        figures[name] = (went_down - stopped_at, came_back - resumed_at)
        log.info(
            "stall: %s not ready %.2fs after SIGSTOP, ready again %.2fs after SIGCONT",
            name,
            went_down - stopped_at,
            came_back - resumed_at,
        )
    for name, (detection, _) in figures.items():
        assert detection <= DETECTION_LIMIT_SECONDS, f"{name} noticed the stall after {detection}s"

    redis = await RespConnection.connect(RedisAddress(port=valkey.port))
    inputs = [input_key("events", p) for p in range(PARTITIONS)]
    outputs = [output_key("events", p) for p in range(PARTITIONS)]
    await wait_for(lambda: group_idle(redis, inputs, WORKER_GROUP))
    await wait_for(lambda: group_idle(redis, outputs, OUTPUT_GROUP))
    redis.close()
    events, record_ids = read_output_events(tmp_path / "data" / "events")
    written = collections.Counter(e["seq"] for e in events)
    assert acked - set(written) == set(), "acknowledged events were lost"
    assert max(written.values()) == 1, "an event was written twice"
    assert len(record_ids) == len(set(record_ids)), "a record was written twice"
    assert outcomes["503"] > 0  # the stall really reached the producers


def first_at(probes: list[Probe], since: float, ready: int) -> float | None:
    return next((p.at for p in probes if p.at >= since and p.ready == ready), None)


async def status_is(session: aiohttp.ClientSession, port: int, expected: int) -> bool:
    return await status(session, f"http://127.0.0.1:{port}/readyz") == expected
