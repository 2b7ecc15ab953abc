"""Idempotent ingest: a request sent again with its Idempotency-Key is stored once, through a
real `hda ingest` process, a real Valkey and real HTTP/WebSocket clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import Processes, stream_events, total_length

from hda.runtime.codec import input_key, partition_for_key
from hda.runtime.ingest.idempotency import record_key
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

NDJSON = {"Content-Type": "application/x-ndjson"}
STREAMS = (
    "    - {name: events, partitions: 3}\n    - {name: keyed, partitions: 4, partitionKey: id}\n"
)
WINDOW = 120


@pytest.fixture
def ingest_port(processes: Processes, write_manifest: Any) -> int:
    manifest: Path = write_manifest(STREAMS, f"  ingest: {{idempotencyWindowSeconds: {WINDOW}}}\n")
    return processes.ingest(manifest)


def url(port: int, stream: str = "events") -> str:
    return f"http://127.0.0.1:{port}/v1/streams/{stream}/events"


async def post(
    port: int, body: bytes, key: str | None, stream: str = "events"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {**NDJSON, **({"Idempotency-Key": key} if key is not None else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(port, stream), data=body, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def test_a_request_sent_again_with_its_key_is_stored_once_and_gets_the_same_receipt(
    ingest_port: int, redis: RespConnection
) -> None:
    body = b'{"n":1}\n{"n":2}\n{"n":3}\n'
    first = await post(ingest_port, body, "batch-0001")
    again = await post(ingest_port, body, "batch-0001")
    assert first[0] == again[0] == 202
    assert again[1] == {**first[1], "replayed": True}
    assert again[2].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2]
    assert sorted(e["n"] for e in await stream_events(redis, "events", 3)) == [1, 2, 3]


async def test_requests_with_different_keys_are_both_stored(
    ingest_port: int, redis: RespConnection
) -> None:
    body = b'{"n":1}\n'
    assert (await post(ingest_port, body, "key-a"))[0] == 202
    assert (await post(ingest_port, body, "key-b"))[0] == 202
    assert await total_length(redis, "events", 3) == 2


async def test_a_key_used_again_for_another_body_is_422_and_nothing_is_written(
    ingest_port: int, redis: RespConnection
) -> None:
    assert (await post(ingest_port, b'{"n":1}\n', "reused"))[0] == 202
    status, reply, _ = await post(ingest_port, b'{"n":2}\n', "reused")
    assert status == 422
    assert "Idempotency-Key 'reused' was used for a different body" in reply["error"]
    assert [e["n"] for e in await stream_events(redis, "events", 3)] == [1]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("has space", "printable ASCII without spaces; found ' '"),
        ("x" * 201, "201 characters long; at most 200"),
        ("", "Idempotency-Key is empty"),
    ],
)
async def test_a_malformed_key_is_400_naming_the_header(
    ingest_port: int, redis: RespConnection, key: str, problem: str
) -> None:
    status, reply, _ = await post(ingest_port, b'{"n":1}\n', key)
    assert status == 400
    assert "Idempotency-Key" in reply["error"]
    assert problem in reply["error"]
    assert await total_length(redis, "events", 3) == 0


async def test_the_record_is_kept_for_the_configured_window(
    ingest_port: int, redis: RespConnection
) -> None:
    _, receipt, _ = await post(ingest_port, b'{"n":1}\n', "windowed")
    partition = int(receipt["firstId"].split("/")[0])
    seconds = int(await redis.execute("TTL", record_key("events", partition, "windowed")))
    assert WINDOW - 5 <= seconds <= WINDOW


async def test_a_request_over_several_partitions_is_stored_once_on_each(
    ingest_port: int, redis: RespConnection
) -> None:
    body = b"\n".join(b'{"id":"device-%d","n":%d}' % (n, n) for n in range(40))
    first = await post(ingest_port, body, "spread", stream="keyed")
    again = await post(ingest_port, body, "spread", stream="keyed")
    assert first[0] == again[0] == 202
    assert again[1]["firstId"] == first[1]["firstId"]
    assert again[1]["lastId"] == first[1]["lastId"]
    stored = await stream_events(redis, "keyed", 4)
    assert sorted(e["n"] for e in stored) == list(range(40))
    written = [p for p in range(4) if int(await redis.execute("XLEN", input_key("keyed", p)))]
    assert len(written) > 1, "the request should have spanned partitions"


def devices_on(partitions: set[int], count: int) -> bytes:
    """An NDJSON body of `count` events whose partition keys (`id`) all route to `partitions`
    of the 4-partition `keyed` stream."""
    ids = (f"device-{n}" for n in range(10_000))
    chosen = [d for d in ids if partition_for_key(d, 4) in partitions][:count]
    return b"\n".join(b'{"id":"%s","n":%d}' % (d.encode(), n) for n, d in enumerate(chosen))


@pytest.mark.parametrize(
    ("second_partitions", "case"),
    [({2, 3}, "partitions the first never touched"), ({1, 2}, "partly the same partitions")],
)
async def test_a_key_reused_on_a_routed_stream_is_422_with_nothing_written(
    ingest_port: int, redis: RespConnection, second_partitions: set[int], case: str
) -> None:
    assert (await post(ingest_port, devices_on({0, 1}, 10), "routed", stream="keyed"))[0] == 202
    status, reply, _ = await post(
        ingest_port, devices_on(second_partitions, 10), "routed", stream="keyed"
    )
    assert status == 422, case
    assert "Idempotency-Key 'routed' was used for a different body" in reply["error"]
    assert len(await stream_events(redis, "keyed", 4)) == 10, case


async def test_concurrent_keyed_requests_on_a_routed_stream_are_each_stored_once(
    ingest_port: int, redis: RespConnection
) -> None:
    bodies = [
        b"\n".join(b'{"id":"device-%d","n":%d}' % (n % 7, 10 * r + n) for n in range(10))
        for r in range(20)
    ]
    sends = [post(ingest_port, body, f"burst-{r}", stream="keyed") for r, body in enumerate(bodies)]
    first = await asyncio.gather(*sends)
    again = await asyncio.gather(
        *(post(ingest_port, body, f"burst-{r}", stream="keyed") for r, body in enumerate(bodies))
    )
    assert {status for status, _, _ in first + again} == {202}
    assert all(reply.get("replayed") for _, reply, _ in again)
    stored = await stream_events(redis, "keyed", 4)
    assert sorted(e["n"] for e in stored) == list(range(200))


async def test_websocket_frames_sent_again_on_a_new_connection_from_seq_are_stored_once(
    ingest_port: int, redis: RespConnection
) -> None:
    ws_url = f"ws://127.0.0.1:{ingest_port}/v1/streams/events/ws"
    frames = [b'{"n":%d}' % n for n in range(1, 5)]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, headers={"Idempotency-Key": "producer-7"}) as ws:
            for frame in frames[:3]:
                await ws.send_bytes(frame)
            first_acks = [orjson.loads((await ws.receive()).data) for _ in range(3)]
        # As after a lost connection whose last two acks never arrived: resend from frame 2.
        async with session.ws_connect(
            f"{ws_url}?seq=2", headers={"Idempotency-Key": "producer-7"}
        ) as ws:
            for frame in frames[1:]:
                await ws.send_bytes(frame)
            second_acks = [orjson.loads((await ws.receive()).data) for _ in range(3)]
    assert [a["seq"] for a in first_acks] == [1, 2, 3]
    assert [a["seq"] for a in second_acks] == [2, 3, 4]
    assert second_acks[0] == {**first_acks[1], "replayed": True}
    assert second_acks[1] == {**first_acks[2], "replayed": True}
    assert "replayed" not in second_acks[2]
    assert sorted(e["n"] for e in await stream_events(redis, "events", 3)) == [1, 2, 3, 4]


@pytest.mark.parametrize("seq", ["0", "two", "-1"])
async def test_websocket_with_a_bad_seq_is_400_naming_the_parameter(
    ingest_port: int, seq: str
) -> None:
    ws_url = f"ws://127.0.0.1:{ingest_port}/v1/streams/events/ws?seq={seq}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url)
    assert refused.value.status == 400
    async with aiohttp.ClientSession() as session, session.get(ws_url) as response:
        assert "query parameter seq must be a whole number >= 1" in (await response.json())["error"]
