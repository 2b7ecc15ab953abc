"""`hda worker` against a real Valkey: pipeline, atomic commit, reclaim, dead letters, SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.runtime.conftest import Processes, group_idle, stream_entries, stream_events, wait_for

from hda.runtime.codec import dead_letter_key, input_key, output_key
from hda.runtime.config import WORKER_GROUP, load_config
from hda.runtime.embedded import EmbeddedValkey
from hda.runtime.groups import ensure_groups
from hda.runtime.resp import RedisAddress, RespConnection
from hda.runtime.worker import Delivered, Worker

pytestmark = pytest.mark.runtime

PIPELINE = """  workers:
    maxDeliveries: 3
    pipeline:
      - parseJson: {field: payload}
      - filter: {field: level, op: ne, value: debug}
      - setFields: {fields: {env: test}}
      - renameFields: {fields: {msg: message}}
      - dropFields: {fields: [secret]}
      - redact: {fields: [message], pattern: '\\d{4}-\\d{4}', replacement: '****'}
"""


async def add_entry(redis: RespConnection, key: str, events: list[dict[str, Any]]) -> bytes:
    payload = b"\n".join(orjson.dumps(e) for e in events)
    entry_id: bytes = await redis.execute("XADD", key, "*", "n", len(events), "d", payload)
    return entry_id


async def test_pipeline_steps_run_and_results_commit_with_the_ack(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest("    - {name: logs, partitions: 2}\n", PIPELINE)
    await ensure_groups(redis, load_config(manifest))
    first = await add_entry(
        redis,
        input_key("logs", 0),
        [
            {"level": "info", "msg": "card 1234-5678 ok", "secret": "x", "payload": '{"a":1}'},
            {"level": "debug", "msg": "noise"},
        ],
    )
    second = await add_entry(redis, input_key("logs", 1), [{"level": "warn", "msg": "plain"}])
    processes.worker(manifest)
    keys = [input_key("logs", p) for p in range(2)]
    await wait_for(lambda: group_idle(redis, keys, WORKER_GROUP))
    events = await stream_events(redis, "logs", 2, output=True)
    assert sorted(events, key=lambda e: e["level"]) == [
        {"level": "info", "payload": {"a": 1}, "env": "test", "message": "card **** ok"},
        {"level": "warn", "env": "test", "message": "plain"},
    ]
    # every output entry names the input entry it came from
    for partition, source in ((0, first), (1, second)):
        entries = await stream_entries(redis, output_key("logs", partition))
        assert [fields[b"src"] for _, fields in entries] == [source]


async def test_poison_event_goes_to_the_dead_letter_stream_after_max_deliveries(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest("    - {name: logs, partitions: 1}\n", PIPELINE)
    await ensure_groups(redis, load_config(manifest))
    key = input_key("logs", 0)
    await add_entry(redis, key, [{"level": "info", "payload": '{"n":1}'}])
    poison_id = await add_entry(
        redis, key, [{"level": "info", "payload": '{"n":2}'}, {"level": "info", "payload": "{oops"}]
    )
    await add_entry(redis, key, [{"level": "info", "payload": '{"n":3}'}])
    processes.worker(manifest, "worker-0", "--claim-idle", "0.2")

    async def healthy_entries_done() -> bool:
        events = await stream_events(redis, "logs", 1, output=True)
        return {1, 3} <= {e["payload"]["n"] for e in events}

    # Nothing else is held up: the entries around the poison are committed on first delivery.
    await wait_for(healthy_entries_done)
    await wait_for(lambda: group_idle(redis, [key], WORKER_GROUP))
    dead = await stream_entries(redis, dead_letter_key("logs", 0))
    assert len(dead) == 1
    assert dead[0][1][b"src"] == poison_id
    letter = orjson.loads(dead[0][1][b"d"])
    assert letter["index"] == 1
    assert letter["event"] == {"level": "info", "payload": "{oops"}
    assert "parseJson" in letter["error"]
    # its healthy neighbour in the same entry still reached the output, once
    events = await stream_events(redis, "logs", 1, output=True)
    assert sorted(e["payload"]["n"] for e in events) == [1, 2, 3]
    log_text = (processes.root / "logs" / "worker-0.log").read_text()
    assert log_text.count("left pending for a retry") == 2  # deliveries 1 and 2 of 3


async def test_entries_of_a_dead_consumer_are_reclaimed_once(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest("    - {name: logs, partitions: 1}\n")
    await ensure_groups(redis, load_config(manifest))
    key = input_key("logs", 0)
    for i in range(5):
        await add_entry(redis, key, [{"i": i}])
    # A consumer that read everything and died without acking.
    await redis.execute("XREADGROUP", "GROUP", WORKER_GROUP, "ghost", "STREAMS", key, ">")
    processes.worker(manifest, "worker-0", "--claim-idle", "0.3")
    await wait_for(lambda: group_idle(redis, [key], WORKER_GROUP))
    assert sorted(e["i"] for e in await stream_events(redis, "logs", 1, output=True)) == [
        0,
        1,
        2,
        3,
        4,
    ]


async def test_a_commit_happens_once_even_when_two_workers_finish_the_same_entry(
    valkey: EmbeddedValkey, write_manifest: Any, redis: RespConnection
) -> None:
    manifest: Path = write_manifest("    - {name: logs, partitions: 1}\n")
    config = load_config(manifest)
    await ensure_groups(redis, config)
    key = input_key("logs", 0)
    await add_entry(redis, key, [{"i": 1}])
    rows = await redis.execute("XREADGROUP", "GROUP", WORKER_GROUP, "slow", "STREAMS", key, ">")
    entry_id, flat = rows[0][1][0]
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    address = RedisAddress(port=valkey.port)
    slow, fast = Worker(config, address, "slow"), Worker(config, address, "fast")
    item = Delivered(0, entry_id, fields, 1)
    assert await fast.process(redis, {("logs", 0): [item]}) == 1
    assert await slow.process(redis, {("logs", 0): [item]}) == 0
    assert len(await stream_entries(redis, output_key("logs", 0))) == 1


async def test_sigterm_finishes_and_removes_the_consumer_only_without_pending(
    processes: Processes, write_manifest: Any, redis: RespConnection
) -> None:
    manifest = write_manifest("    - {name: logs, partitions: 2}\n", PIPELINE)
    await ensure_groups(redis, load_config(manifest))
    await add_entry(redis, input_key("logs", 0), [{"level": "info", "payload": "{bad"}])
    await add_entry(redis, input_key("logs", 1), [{"level": "info"}])
    keeper = processes.worker(manifest, "keeper")
    keys = [input_key("logs", p) for p in range(2)]

    async def poison_pending() -> bool:
        summary = await redis.execute("XPENDING", keys[0], WORKER_GROUP)
        return int(summary[0]) == 1 and len(await stream_events(redis, "logs", 2, output=True)) == 1

    await wait_for(poison_pending)
    keeper.signal(signal.SIGTERM)
    assert keeper.process is not None
    assert keeper.process.wait(30) == 0
    consumers = await redis.execute("XINFO", "CONSUMERS", keys[0], WORKER_GROUP)
    names = {dict(zip(c[0::2], c[1::2], strict=True))[b"name"] for c in consumers}
    assert b"keeper" in names  # its failed entry is still pending: it must stay claimable

    leaver = processes.worker(
        write_manifest("    - {name: logs, partitions: 2}\n", name="plain.yaml"), "leaver"
    )
    await add_entry(redis, input_key("logs", 1), [{"level": "info"}])
    await wait_for(lambda: group_idle(redis, [keys[1]], WORKER_GROUP))
    leaver.signal(signal.SIGTERM)
    assert leaver.process is not None
    assert leaver.process.wait(30) == 0
    for key in keys:
        consumers = await redis.execute("XINFO", "CONSUMERS", key, WORKER_GROUP)
        names = {dict(zip(c[0::2], c[1::2], strict=True))[b"name"] for c in consumers}
        assert b"leaver" not in names
