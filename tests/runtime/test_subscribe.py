"""Subscribe through any output replica: the whole stream, in ID order per partition, resumable
by a position vector on any replica, behind the ingest token, history streamed in bounded memory.
Real output processes (2 and 3 replicas that know each other), a real Valkey, real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import Processes, group_idle, read_output_events, wait_for

from hda.runtime.codec import StreamId, output_key, parse_record_id
from hda.runtime.config import OUTPUT_GROUP, load_config
from hda.runtime.embedded import free_port
from hda.runtime.groups import ensure_groups
from hda.runtime.resp import RespConnection
from hda.runtime.segments import SegmentWriter, encode_record

pytestmark = pytest.mark.runtime
log = logging.getLogger(__name__)

PARTITIONS = 3
STREAMS = f"    - {{name: out, partitions: {PARTITIONS}}}\n"
TOKEN = "subscribe-token"


async def add_entries(redis: RespConnection, first: int, count: int) -> list[str]:
    """`count` output entries round-robin over the partitions, in small pipelined bursts so that
    every replica's consumer gets some and they write concurrently; returns their record IDs."""
    ids = []
    for burst in range(first, first + count, 6):
        numbers = range(burst, min(burst + 6, first + count))
        replies = await redis.pipeline(
            [
                ("XADD", output_key("out", i % PARTITIONS), "*", "src", "1-1", "n", 1,
                 "d", b'{"i":%d}' % i)
                for i in numbers
            ]
        )  # fmt: skip
        ids += [f"{i % PARTITIONS}/{r.decode()}" for i, r in zip(numbers, replies, strict=True)]
        await asyncio.sleep(0.003)
    return ids


async def all_written(redis: RespConnection) -> None:
    keys = [output_key("out", p) for p in range(PARTITIONS)]
    await wait_for(lambda: group_idle(redis, keys, OUTPUT_GROUP))


def held_by_each(root: Path, replicas: int) -> list[set[str]]:
    return [set(read_output_events(root / f"output-{i}" / "out")[1]) for i in range(replicas)]


async def subscribe(
    port: int, query: str = "", headers: dict[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/v1/streams/out/subscribe{query}", headers=headers
        )
    except BaseException:
        await session.close()
        raise
    ws._hda_session = session  # type: ignore[attr-defined]  # closed with the socket
    return ws


async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()
    await ws._hda_session.close()  # type: ignore[attr-defined]


async def receive_ids(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        message = await ws.receive(timeout=30)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        ids.append(orjson.loads(message.data)["id"])
    return ids


async def assert_nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):  # DID NOT RAISE: a frame arrived
        await ws.receive(timeout=1.0)


def assert_in_order_per_partition(ids: list[str]) -> None:
    last: dict[int, StreamId] = {}
    for record_id in ids:
        partition, entry_id = parse_record_id(record_id)
        assert entry_id > last.get(partition, (0, 0)), f"{record_id} after {last[partition]}"
        last[partition] = entry_id


def vector_after(ids: list[str]) -> str:
    last: dict[int, str] = {}
    for record_id in ids:
        partition, _, entry_id = record_id.partition("/")
        last[int(partition)] = entry_id
    return ",".join(f"{p}/{entry_id}" for p, entry_id in sorted(last.items()))


@pytest.mark.parametrize("replicas", [2, 3])
async def test_any_replica_serves_every_event_in_order_per_partition(
    processes: Processes,
    write_manifest: Any,
    redis: RespConnection,
    tmp_path: Path,
    replicas: int,
) -> None:
    manifest = write_manifest(STREAMS)
    await ensure_groups(redis, load_config(manifest))
    ports = processes.output_replicas(manifest, tmp_path, replicas)
    live = [await subscribe(port) for port in ports]  # live only, before any entry exists
    ids = await add_entries(redis, 0, 240)
    await all_written(redis)
    held = held_by_each(tmp_path, replicas)
    assert sum(len(h) for h in held) == 240
    assert all(len(h) < 240 for h in held)  # each replica alone holds only part of the stream

    for ws in live:  # written concurrently by every replica, merged as it happened
        received = await receive_ids(ws, 240)
        assert sorted(received) == sorted(ids)
        assert_in_order_per_partition(received)
        await assert_nothing_more(ws)
        await close(ws)
    for port in ports:  # history, from the files of every replica
        ws = await subscribe(port, "?from=0")
        received = await receive_ids(ws, 240)
        assert sorted(received) == sorted(ids)
        assert_in_order_per_partition(received)
        await assert_nothing_more(ws)
        await close(ws)


async def test_a_position_vector_resumes_on_another_replica_with_exactly_the_rest(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(STREAMS)
    await ensure_groups(redis, load_config(manifest))
    ports = processes.output_replicas(manifest, tmp_path, 3)
    ids = await add_entries(redis, 0, 150)
    await all_written(redis)

    first = await subscribe(ports[0], "?from=0")
    seen = await receive_ids(first, 100)
    await close(first)
    resumed = await subscribe(ports[2], f"?from={vector_after(seen)}")
    later = await add_entries(redis, 150, 30)  # live, after the history
    rest = await receive_ids(resumed, 80)
    assert sorted(rest) == sorted(set(ids + later) - set(seen))
    assert_in_order_per_partition(seen + rest)
    await assert_nothing_more(resumed)
    await close(resumed)


async def test_a_replica_going_away_closes_with_1013_and_where_to_resume(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(STREAMS)
    await ensure_groups(redis, load_config(manifest))
    ports = processes.output_replicas(manifest, tmp_path, 2)
    ids = await add_entries(redis, 0, 30)
    await all_written(redis)
    ws = await subscribe(ports[0], "?from=0")
    seen = await receive_ids(ws, 30)
    processes.components[-1].stop()  # replica 1

    message = await ws.receive(timeout=30)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1013
    assert message.extra == f"output replica 1 went away; resume with from={vector_after(seen)}"
    assert sorted(seen) == sorted(ids)
    await close(ws)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # until it is back
        await subscribe(ports[0], "?from=0")
    assert refused.value.status == 503


async def test_a_consumer_missing_from_the_peers_is_refused_rather_than_skipped(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    """A scale-up the mounted spec does not show yet: output-1 consumes, output-0's peers do
    not name it, so merging now could miss its records."""
    manifest = write_manifest(STREAMS)
    await ensure_groups(redis, load_config(manifest))
    port = free_port()
    only_itself = ("--peers", f"output-0=http://127.0.0.1:{port}")
    processes.output(manifest, tmp_path / "output-0", "output-0", *only_itself, port=port)
    processes.output(manifest, tmp_path / "output-1", "output-1", *only_itself)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/v1/streams/out/subscribe?from=0"
        async with session.get(url) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (
                "output replica output-1 is not among the peers" in (await response.json())["error"]
            )


async def test_subscribe_requires_the_ingest_token_and_refuses_it_in_the_query(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(STREAMS)
    await ensure_groups(redis, load_config(manifest))
    ports = processes.output_replicas(manifest, tmp_path, 2, env={"HDA_INGEST_TOKEN": TOKEN})
    ids = await add_entries(redis, 0, 30)
    await all_written(redis)
    for query in ("?from=0", f"?from=0&token={TOKEN}", "?from=0&scope=local"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await subscribe(ports[1], query)
        assert refused.value.status == 401
    # the gateway passes the token on to its peers
    ws = await subscribe(ports[1], "?from=0", headers={"Authorization": f"Bearer {TOKEN}"})
    assert sorted(await receive_ids(ws, 30)) == sorted(ids)
    await close(ws)


async def test_subscribe_accepts_the_query_token_when_the_spec_allows_it(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(STREAMS, "  ingest: {acceptTokenInQuery: true}\n")
    await ensure_groups(redis, load_config(manifest))
    ports = processes.output_replicas(manifest, tmp_path, 1, env={"HDA_INGEST_TOKEN": TOKEN})
    ids = await add_entries(redis, 0, 6)
    await all_written(redis)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await subscribe(ports[0], "?from=0&token=wrong")
    assert refused.value.status == 401
    ws = await subscribe(ports[0], f"?from=0&token={TOKEN}")
    assert sorted(await receive_ids(ws, 6)) == sorted(ids)
    await close(ws)


async def test_bad_positions_are_refused_naming_the_item(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(STREAMS)
    ports = processes.output_replicas(manifest, tmp_path, 1)
    async with aiohttp.ClientSession() as session:
        for query, fragment in (
            ("from=0/1-0,x", "'x' is not PARTITION/MS-SEQ"),
            ("from=7/1-0", "partition 7 does not exist"),
            ("from=1/1-0,1/2-0", "partition 1 is named twice"),
            ("scope=everything", "scope='everything'"),
        ):
            url = f"http://127.0.0.1:{ports[0]}/v1/streams/out/subscribe?{query}"
            async with session.get(url) as response:
                assert response.status == 400
                assert fragment in (await response.json())["error"]


def write_partition_0(directory: Path, entry_ms: list[int]) -> None:
    writer = SegmentWriter(directory, "out", max_bytes=1 << 30, max_age_seconds=3600)
    writer.recover()
    writer.append(
        [(0, (ms, 0), encode_record(0, b"%d-0" % ms, b"1-1", 1, b'{"ms":%d}' % ms))
         for ms in entry_ms]
    )  # fmt: skip
    writer.close()


async def test_unevenly_spread_history_is_merged_within_the_buffer_limit(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    """One replica holds three records in four: read at the same pace, the other replica's
    records would pile up far past the limit; the gateway reads the one ahead more slowly."""
    manifest = write_manifest(
        "    - {name: out, partitions: 1}\n",
        "  output:\n    sinks:\n      subscribers: {maxBufferedEntries: 400}\n",
    )
    await ensure_groups(redis, load_config(manifest))
    count = 8000
    write_partition_0(tmp_path / "output-0" / "out", [ms for ms in range(1, count + 1) if ms % 4])
    write_partition_0(tmp_path / "output-1" / "out", list(range(4, count + 1, 4)))
    # as if the output group had delivered (and the replicas acknowledged) all of them
    await redis.execute("XGROUP", "SETID", output_key("out", 0), OUTPUT_GROUP, f"{count}-0")
    ports = processes.output_replicas(manifest, tmp_path, 2)

    ws = await subscribe(ports[0], "?from=0")
    received = await receive_ids(ws, count)
    assert received == [f"0/{ms}-0" for ms in range(1, count + 1)]
    await close(ws)


HISTORY_BYTES = 200 * 1024 * 1024
RECORD_PAD = 64 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def write_history(directory: Path) -> int:
    """A 200 MiB segment of partition 0, then a small newest one (recovery reads only that)."""
    writer = SegmentWriter(directory, "out", max_bytes=HISTORY_BYTES * 2, max_age_seconds=3600)
    writer.recover()
    payload = b'{"pad":"%s"}' % (b"x" * RECORD_PAD)
    count = HISTORY_BYTES // len(payload)
    for first in range(0, count, 100):
        batch = range(first, min(first + 100, count))
        writer.append(
            [(0, (1000 + i, 0), encode_record(0, b"%d-0" % (1000 + i), b"1-1", 1, payload))
             for i in batch]
        )  # fmt: skip
    writer.sync()
    writer.max_bytes = 1  # the next record begins a new segment
    writer.append(
        [(0, (1000 + count, 0), encode_record(0, b"%d-0" % (1000 + count), b"1-1", 1, b"{}"))]
    )
    writer.close()
    return count + 1


async def test_history_is_streamed_with_bounded_memory(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest("    - {name: out, partitions: 1}\n")
    await ensure_groups(redis, load_config(manifest))
    records = write_history(tmp_path / "output-0" / "out")
    component, port = processes.output(manifest, tmp_path / "output-0")
    assert component.process is not None
    pid = component.process.pid
    await asyncio.sleep(1.0)
    baseline = rss_bytes(pid)
    peak = baseline
    received = 0
    received_bytes = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    ws = await subscribe(port, "?from=0")
    try:
        while received < records:
            message = await ws.receive(timeout=60)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            received += 1
            received_bytes += len(message.data)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await close(ws)
    seconds = time.monotonic() - started
    growth = peak - baseline
    log.info(  # the figure in docs/runtime.md (pytest --log-cli-level=INFO)
        "history: %.0f MiB in %.1f s; output RSS %.0f MiB, peak %.0f MiB (+%.1f MiB)",
        received_bytes / 2**20,
        seconds,
        baseline / 2**20,
        peak / 2**20,
        growth / 2**20,
    )
    assert received_bytes > HISTORY_BYTES * 0.99
    assert growth < 32 * 2**20  # a chunk and a few frames, not the 200 MiB segment
