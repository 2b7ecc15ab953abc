"""`hda output` against a real Valkey: segments, crash recovery, subscribers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import Processes, group_idle, read_output_events, wait_for

from hda.runtime.codec import output_key, parse_stream_id
from hda.runtime.config import OUTPUT_GROUP, load_config
from hda.runtime.groups import ensure_groups
from hda.runtime.resp import Arg, RespConnection
from hda.runtime.segments import SegmentWriter, encode_record, list_segments

pytestmark = pytest.mark.runtime

ONE_PARTITION = "    - {name: out, partitions: 1}\n"


async def add_output(redis: RespConnection, key: str, events: list[dict[str, Any]]) -> bytes:
    payload = b"\n".join(orjson.dumps(e) for e in events)
    entry_id: bytes = await redis.execute(
        "XADD", key, "*", "src", "1-1", "n", len(events), "d", payload
    )
    return entry_id


async def test_records_carry_ids_and_all_events_arrive(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest("    - {name: out, partitions: 2}\n")
    await ensure_groups(redis, load_config(manifest))
    ids = [
        await add_output(redis, output_key("out", i % 2), [{"i": i}, {"i": i + 100}])
        for i in range(6)
    ]
    processes.output(manifest, tmp_path / "data")
    keys = [output_key("out", p) for p in range(2)]
    await wait_for(lambda: group_idle(redis, keys, OUTPUT_GROUP))
    events, record_ids = read_output_events(tmp_path / "data" / "out")
    assert sorted(e["i"] for e in events) == sorted([*range(6), *range(100, 106)])
    assert sorted(record_ids) == sorted(f"{i % 2}/{entry.decode()}" for i, entry in enumerate(ids))


async def test_restart_after_fsync_before_ack_neither_duplicates_nor_loses(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    """The crash window: records fsync'd, XACK never sent, and a torn half-written record."""
    manifest = write_manifest(ONE_PARTITION)
    await ensure_groups(redis, load_config(manifest))
    key = output_key("out", 0)
    ids = [await add_output(redis, key, [{"i": i}]) for i in range(5)]
    rows = await redis.execute("XREADGROUP", "GROUP", OUTPUT_GROUP, "output-0", "STREAMS", key, ">")
    assert len(rows[0][1]) == 5  # all five delivered to output-0, none acknowledged
    writer = SegmentWriter(tmp_path / "data" / "out", "out", max_bytes=1 << 20, max_age_seconds=600)
    writer.recover()
    writer.append(
        [
            (0, parse_stream_id(i), encode_record(0, i, b"1-1", 1, b'{"i":%d}' % n))
            for n, i in enumerate(ids[:3])
        ]
    )
    writer.sync()
    torn = encode_record(0, ids[3], b"1-1", 1, b'{"i":3}')
    writer.append([(0, parse_stream_id(ids[3]), torn[: len(torn) // 2])])
    writer.close()

    processes.output(manifest, tmp_path / "data", name="output-0")
    await wait_for(lambda: group_idle(redis, [key], OUTPUT_GROUP))
    events, record_ids = read_output_events(tmp_path / "data" / "out")
    assert [e["i"] for e in events] == [0, 1, 2, 3, 4]
    assert record_ids == [f"0/{i.decode()}" for i in ids]


async def subscribe(port: int, query: str = "") -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"http://127.0.0.1:{port}/v1/streams/out/subscribe{query}")
    ws._hda_session = session  # type: ignore[attr-defined]  # closed with the socket
    return ws


async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()
    await ws._hda_session.close()  # type: ignore[attr-defined]


async def receive_records(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [orjson.loads((await ws.receive(timeout=30)).data) for _ in range(count)]


async def test_subscribers_get_history_then_live_and_resume_by_id_across_segments(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: out, partitions: 2}\n",
        "  output:\n    sinks:\n      segmentFiles: {maxSegmentBytes: 600}\n",
    )
    await ensure_groups(redis, load_config(manifest))
    for i in range(12):
        await add_output(redis, output_key("out", i % 2), [{"i": i, "pad": "x" * 60}])
    _, port = processes.output(manifest, tmp_path / "data")
    keys = [output_key("out", p) for p in range(2)]
    await wait_for(lambda: group_idle(redis, keys, OUTPUT_GROUP))
    assert len(list_segments(tmp_path / "data" / "out")) > 1  # rotated by size

    everything = await subscribe(port, "?from=0")
    history = await receive_records(everything, 12)
    assert sorted(r["events"][0]["i"] for r in history) == list(range(12))
    live_only = await subscribe(port)
    await add_output(redis, output_key("out", 1), [{"i": 12}])
    assert (await receive_records(everything, 1))[0]["events"] == [{"i": 12}]
    assert (await receive_records(live_only, 1))[0]["events"] == [{"i": 12}]

    # Resume after the 5th record: exactly the rest, in the same order.
    resumed = await subscribe(port, f"?from={history[4]['id']}")
    rest = await receive_records(resumed, 8)
    assert [r["id"] for r in rest[:7]] == [r["id"] for r in history[5:]]
    assert rest[7]["events"] == [{"i": 12}]
    for ws in (everything, live_only, resumed):
        await close(ws)


async def test_slow_subscriber_is_disconnected_with_a_close_code(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        ONE_PARTITION, "  output:\n    sinks:\n      subscribers: {maxBufferedEntries: 2}\n"
    )
    await ensure_groups(redis, load_config(manifest))
    _, port = processes.output(manifest, tmp_path / "data")
    ws = await subscribe(port)
    key = output_key("out", 0)
    # One transaction: output reads all ten in one batch, more than this subscriber may queue.
    transaction: list[tuple[Arg, ...]] = [
        ("MULTI",),
        *[("XADD", key, "*", "src", "1-1", "n", 1, "d", b'{"i":%d}' % i) for i in range(10)],
        ("EXEC",),
    ]
    await redis.pipeline(transaction)
    message = await ws.receive(timeout=30)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4008
    assert message.extra is not None
    assert "from=" in message.extra
    await close(ws)
    # The pipeline did not wait for it: everything is durable.
    await wait_for(lambda: group_idle(redis, [key], OUTPUT_GROUP))
    events, _ = read_output_events(tmp_path / "data" / "out")
    assert len(events) == 10


async def test_subscribe_errors(
    processes: Processes, write_manifest: Any, tmp_path: Path, redis: RespConnection
) -> None:
    manifest = write_manifest(ONE_PARTITION)
    _, port = processes.output(manifest, tmp_path / "data")
    async with aiohttp.ClientSession() as session:
        for query, status in (
            ("/v1/streams/nope/subscribe", 404),
            ("/v1/streams/out/subscribe?from=xyz", 400),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"http://127.0.0.1:{port}{query}")
            assert refused.value.status == status
