"""Ingest backpressure counts the output stream's backlog: a stalled output throttles ingest."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.runtime.conftest import Processes, group_idle, wait_for

from hda.runtime.codec import input_key
from hda.runtime.config import WORKER_GROUP
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

HEADERS = {"Content-Type": "application/x-ndjson"}


async def test_stopped_output_makes_ingest_answer_429_and_recovers_after_sigcont(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: events, partitions: 1}\n",
        "  ingest: {backpressure: {maxBacklog: 5, retryAfterSeconds: 4}}\n",
    )
    port = processes.ingest(manifest)
    processes.worker(manifest)
    output, _ = processes.output(manifest, tmp_path / "data")
    target = f"http://127.0.0.1:{port}/v1/streams/events/events"
    output.signal(signal.SIGSTOP)
    try:
        async with aiohttp.ClientSession() as session:
            accepted = 0
            throttled: aiohttp.ClientResponse | None = None
            for i in range(200):
                async with session.post(target, data=b'{"i":%d}' % i, headers=HEADERS) as reply:
                    if reply.status == 429:
                        throttled = reply
                        break
                    assert reply.status == 202
                    accepted += 1
                # let the worker move each event on, so only the output backlog can grow
                await wait_for(lambda: group_idle(redis, [input_key("events", 0)], WORKER_GROUP))
            assert throttled is not None, "ingest never pushed back while output was stopped"
            assert throttled.headers["Retry-After"] == "4"
            assert accepted > 5  # the watermark, passed by the output backlog alone
            output.signal(signal.SIGCONT)

            async def accepted_again() -> bool:
                async with session.post(target, data=b'{"i":-1}', headers=HEADERS) as reply:
                    return reply.status == 202

            await wait_for(accepted_again)
    finally:
        output.signal(signal.SIGCONT)
