"""`hda ingest` as a real process, against a real Valkey, through real HTTP/WebSocket clients."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import (
    Processes,
    stream_entries,
    stream_events,
    total_length,
    wait_for,
)

from hda.runtime.codec import input_key, partition_for_key
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

TOKEN = "s3cret-token"
NDJSON = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
STREAMS = "    - {name: events, partitions: 3}\n    - {name: keyed, partitions: 4, partitionKey: device.id}\n"


@pytest.fixture
def ingest_port(processes: Processes, write_manifest: Any) -> int:
    manifest: Path = write_manifest(STREAMS, "  ingest: {maxRequestBytes: 4096}\n")
    return processes.ingest(manifest, env={"HDA_INGEST_TOKEN": f"other-token,{TOKEN}"})


def url(port: int, stream: str = "events") -> str:
    return f"http://127.0.0.1:{port}/v1/streams/{stream}/events"


async def test_ndjson_is_accepted_with_ids_and_stored_as_one_entry(
    ingest_port: int, redis: RespConnection
) -> None:
    body = b'{"n":1}\n\n{"n":2}\r\n{"n":3}\n'
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port), data=body, headers=NDJSON) as response,
    ):
        assert response.status == 202
        receipt = await response.json()
    assert receipt["count"] == 3
    partition, entry_id, index = receipt["firstId"].split("/")
    assert index == "0"
    assert receipt["lastId"] == f"{partition}/{entry_id}/2"
    entries = await stream_entries(redis, input_key("events", int(partition)))
    assert [(e, f[b"n"]) for e, f in entries] == [(entry_id.encode(), b"3")]
    assert await stream_events(redis, "events", 3) == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_json_object_and_array_are_accepted(ingest_port: int, redis: RespConnection) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(url(ingest_port), data=b'{\n  "a": 1\n}', headers=JSON) as response:
            assert response.status == 202
            assert (await response.json())["count"] == 1
        async with session.post(
            url(ingest_port), data=b'[{"a":2},{"a":3}]', headers=JSON
        ) as response:
            assert response.status == 202
            assert (await response.json())["count"] == 2
    assert sorted(e["a"] for e in await stream_events(redis, "events", 3)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"ok":1}\n{"ok":2}\n{"broken":\n{"ok":4}\n', NDJSON, "line 3"),
        (b'{"ok":1}\n\n[1,2]\n', NDJSON, "line 3: expected a JSON object"),
        (b'[{"ok":1},{"ok":2},"nope"]', JSON, "element 2"),
        (b'{"a":', JSON, "invalid JSON"),
        (b"", NDJSON, "empty body"),
    ],
)
async def test_bad_input_is_400_naming_the_problem_and_nothing_is_written(
    ingest_port: int, redis: RespConnection, body: bytes, headers: dict[str, str], message: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port), data=body, headers=headers) as response,
    ):
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert await total_length(redis, "events", 3) == 0


async def test_body_over_max_request_bytes_is_413(ingest_port: int, redis: RespConnection) -> None:
    big = b"\n".join(orjson.dumps({"i": i, "pad": "x" * 100}) for i in range(60))
    async with aiohttp.ClientSession() as session:
        async with session.post(url(ingest_port), data=big, headers=NDJSON) as response:
            assert response.status == 413

        async def chunked() -> Any:  # no Content-Length: the limit applies while reading
            yield big[:2000]
            yield big[2000:]

        async with session.post(url(ingest_port), data=chunked(), headers=NDJSON) as response:
            assert response.status == 413
    assert await total_length(redis, "events", 3) == 0


async def test_unknown_stream_is_404(ingest_port: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port, "nope"), data=b'{"a":1}', headers=JSON) as response,
    ):
        assert response.status == 404
        assert "nope" in (await response.json())["error"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic czNjcmV0LXRva2Vu"])
async def test_missing_or_wrong_token_is_401(
    ingest_port: int, redis: RespConnection, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port), data=b'{"a":1}', headers=headers) as response,
    ):
        assert response.status == 401
    assert await total_length(redis, "events", 3) == 0


async def test_unsupported_content_type_is_415(ingest_port: int) -> None:
    headers = {**JSON, "Content-Type": "text/plain"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port), data=b'{"a":1}', headers=headers) as response,
    ):
        assert response.status == 415


async def test_partition_key_picks_the_partition_by_hash(
    ingest_port: int, redis: RespConnection
) -> None:
    devices = [f"dev-{i}" for i in range(20)]
    body = b"\n".join(orjson.dumps({"device": {"id": d}, "v": i}) for i, d in enumerate(devices))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(ingest_port, "keyed"), data=body, headers=NDJSON) as response,
    ):
        assert response.status == 202
        assert (await response.json())["count"] == 20
    for partition in range(4):
        for _, fields in await stream_entries(redis, input_key("keyed", partition)):
            for line in fields[b"d"].split(b"\n"):
                device = orjson.loads(line)["device"]["id"]
                assert partition_for_key(device, 4) == partition


async def test_probes_and_metrics(ingest_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(url(ingest_port), data=b'{"a":1}', headers=JSON) as response:
            assert response.status == 202
        async with session.get(f"http://127.0.0.1:{ingest_port}/healthz") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{ingest_port}/readyz") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{ingest_port}/metrics") as response:
            text = await response.text()
    assert 'hda_ingest_events_total{stream="events"} 1' in text
    assert "# TYPE hda_ingest_backlog_events gauge" in text


async def test_websocket_acks_each_frame_with_ids_or_an_error(
    ingest_port: int, redis: RespConnection
) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{ingest_port}/v1/streams/events/ws", headers=NDJSON
        )
        await ws.send_str('{"w":1}')
        await ws.send_str('{"w":2}\n{"w":3}\n')
        await ws.send_str('{"w":4}\nnot json\n')
        await ws.send_bytes(b'{"w":5}')
        await ws.send_str('[{"w":6},{"w":7}]')
        acks = [orjson.loads((await ws.receive()).data) for _ in range(5)]
        await ws.close()
    assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
    assert [a.get("count") for a in acks] == [1, 2, None, 1, 2]
    assert acks[2]["status"] == 400
    assert "line 2" in acks[2]["error"]
    assert acks[1]["firstId"].endswith("/0")
    assert acks[1]["lastId"].endswith("/1")
    assert sorted(e["w"] for e in await stream_events(redis, "events", 3)) == [1, 2, 3, 5, 6, 7]


async def test_websocket_requires_the_token_and_refuses_it_in_the_query_by_default(
    ingest_port: int,
) -> None:
    base = f"http://127.0.0.1:{ingest_port}/v1/streams/events"
    async with aiohttp.ClientSession() as session:
        for query in ("", f"?token={TOKEN}"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{base}/ws{query}")
            assert refused.value.status == 401
        async with session.post(f"{base}/events?token={TOKEN}", data=b'{"a":1}') as response:
            assert response.status == 401
            assert "Authorization: Bearer" in (await response.json())["error"]
        ws = await session.ws_connect(f"{base}/ws", headers={"Authorization": f"Bearer {TOKEN}"})
        await ws.send_str('{"ok":true}')
        assert orjson.loads((await ws.receive()).data)["count"] == 1
        await ws.close()


async def test_query_token_is_accepted_when_the_spec_allows_it(
    processes: Processes, write_manifest: Any
) -> None:
    manifest: Path = write_manifest(STREAMS, "  ingest: {acceptTokenInQuery: true}\n")
    port = processes.ingest(manifest, env={"HDA_INGEST_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}/v1/streams/events"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{base}/ws?token=wrong")
        assert refused.value.status == 401
        ws = await session.ws_connect(f"{base}/ws?token={TOKEN}")
        await ws.send_str('{"ok":true}')
        assert orjson.loads((await ws.receive()).data)["count"] == 1
        await ws.close()


async def test_websocket_frame_over_the_limit_closes_with_1009(ingest_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{ingest_port}/v1/streams/events/ws", headers=NDJSON
        )
        await ws.send_str(orjson.dumps({"pad": "x" * 5000}).decode())
        message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_backlog_above_the_watermark_is_429_and_stops_websocket_reads(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    # No workers run: the backlog only grows.
    manifest = write_manifest(
        "    - {name: events, partitions: 1}\n",
        "  ingest: {backpressure: {maxBacklog: 5, retryAfterSeconds: 7}}\n",
        name="small.yaml",
    )
    port = processes.ingest(manifest)
    target = url(port)
    headers = {"Content-Type": "application/x-ndjson"}
    body = b"\n".join(b'{"i":%d}' % i for i in range(10))
    async with aiohttp.ClientSession() as session:
        async with session.post(target, data=body, headers=headers) as response:
            assert response.status == 202

        async def throttled() -> bool:
            async with session.post(target, data=b'{"i":0}', headers=headers) as response:
                if response.status == 429:
                    assert response.headers["Retry-After"] == "7"
                    return True
                return False

        await wait_for(throttled)
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/v1/streams/events/ws")
        await ws.send_str('{"late":1}')
        # Over the watermark the frame is not read (TCP pushes back) ...
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=1.0)
        # ... until the backlog drains: consume everything as the worker group would.
        key = input_key("events", 0)
        rows = await redis.execute(
            "XREADGROUP", "GROUP", "hda-workers", "drain", "COUNT", 1000, "STREAMS", key, ">"
        )
        ids = [entry_id for entry_id, _ in rows[0][1]]
        await redis.execute("XACK", key, "hda-workers", *ids)
        ack = orjson.loads((await ws.receive(timeout=30)).data)
        assert ack["count"] == 1
        await ws.close()


async def test_valkey_password_comes_from_the_environment(
    tmp_path: Path, write_manifest: Any
) -> None:
    from hda.runtime.embedded import EmbeddedValkey
    from hda.runtime.resp import RedisAddress

    secured = EmbeddedValkey(tmp_path / "secured", password="valkey-pass")
    secured.start()
    group = Processes(tmp_path, secured)
    try:
        manifest = write_manifest("    - {name: events, partitions: 1}\n", name="pw.yaml")
        port = group.ingest(manifest, env={"HDA_REDIS_PASSWORD": "valkey-pass"})
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url(port), data=b'{"a":1}', headers={"Content-Type": "application/json"}
            ) as response,
        ):
            assert response.status == 202
        redis = await RespConnection.connect(
            RedisAddress(port=secured.port, password="valkey-pass")
        )
        assert await redis.execute("XLEN", input_key("events", 0)) == 1
        redis.close()
    finally:
        group.stop_all()
        secured.kill()


async def test_sigterm_acks_every_frame_it_read_then_closes_with_1001(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest("    - {name: events, partitions: 2}\n", name="term.yaml")
    port = processes.ingest(manifest)
    ingest = processes.components[-1]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/v1/streams/events/ws")
        for frame in range(2000):
            await ws.send_str("\n".join(f'{{"f":{frame},"i":{i}}}' for i in range(50)))
        ingest.signal(signal.SIGTERM)
        acked: set[int] = set()
        async for message in ws:
            ack = orjson.loads(message.data)
            assert ack["count"] == 50
            acked.add(ack["seq"] - 1)
        assert ws.close_code == 1001  # going away: resend what was not acknowledged elsewhere
    assert ingest.process is not None
    assert ingest.process.wait(30) == 0
    stored = {e["f"] for e in await stream_events(redis, "events", 2)}
    assert stored == acked  # nothing acked is missing, nothing unacknowledged was written
