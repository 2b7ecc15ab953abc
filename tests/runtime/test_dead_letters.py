"""Dead letters through `hda dlq` and ingest's REST: list, show, replay exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.runtime.conftest import (
    Processes,
    group_idle,
    read_output_events,
    stream_entries,
    wait_for,
)

from hda.runtime.codec import dead_letter_key, input_key
from hda.runtime.config import WORKER_GROUP, load_config
from hda.runtime.groups import ensure_groups
from hda.runtime.resp import RespConnection

pytestmark = pytest.mark.runtime

TOKEN = "dlq-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM = "    - {name: logs, partitions: 2}\n"
# maxDeliveries 1: an event the pipeline rejects is dead-lettered on its first delivery.
STRICT = "  workers:\n    maxDeliveries: 1\n    pipeline:\n      - parseJson: {field: payload}\n"
POISON = {"seq": 7, "payload": "{oops"}


async def dead_letter_one(processes: Processes, write_manifest: Any, redis: RespConnection) -> Path:
    """A real worker dead-letters POISON; then the pipeline is 'fixed' (no parseJson) and a
    passthrough worker runs. Returns the fixed manifest."""
    strict = write_manifest(STREAM, STRICT, name="strict.yaml")
    await ensure_groups(redis, load_config(strict))
    await redis.execute("XADD", input_key("logs", 1), "*", "n", 1, "d", orjson.dumps(POISON))
    worker = processes.worker(strict, "worker-strict")
    await wait_for(lambda: group_idle(redis, [input_key("logs", 1)], WORKER_GROUP))
    worker.stop()
    assert len(await stream_entries(redis, dead_letter_key("logs", 1))) == 1
    fixed: Path = write_manifest(STREAM, name="fixed.yaml")
    processes.worker(fixed, "worker-fixed")
    return fixed


async def output_events_once(directory: Path) -> bool:
    events, _ = read_output_events(directory)
    assert events.count(POISON) <= 1, "replayed event duplicated"
    return events.count(POISON) == 1


async def test_rest_lists_shows_and_replays_a_dead_letter_exactly_once(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    fixed = await dead_letter_one(processes, write_manifest, redis)
    processes.output(fixed, tmp_path / "data")
    port = processes.ingest(fixed, env={"HDA_INGEST_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}/v1/streams/logs/deadletters"
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as reply:
            assert reply.status == 401
        async with session.get(f"{base}?limit=0", headers=AUTH) as reply:
            assert reply.status == 400
            assert "limit must be an integer in 1..1000, got '0'" in (await reply.json())["error"]
        async with session.get(base, headers=AUTH) as reply:
            assert reply.status == 200
            letters = (await reply.json())["deadLetters"]
        assert len(letters) == 1
        letter_id = letters[0]["id"]
        assert letter_id.startswith("1/")
        assert letters[0]["records"][0]["event"] == POISON
        assert "parseJson" in letters[0]["records"][0]["error"]
        async with session.get(f"{base}/{letter_id}", headers=AUTH) as reply:
            assert reply.status == 200
            assert await reply.json() == letters[0]
        async with session.get(f"{base}/5/1-0", headers=AUTH) as reply:
            assert reply.status == 400
            assert "partition 5" in (await reply.json())["error"]
        async with session.post(f"{base}/{letter_id}/replay", headers=AUTH) as reply:
            assert reply.status == 200
            assert (await reply.json())["replayed"] == [letter_id]
        async with session.post(f"{base}/{letter_id}/replay", headers=AUTH) as reply:
            assert reply.status == 404  # gone: a second replay never duplicates
        async with session.post(f"{base}/replay", headers=AUTH) as reply:
            assert (await reply.json()) == {"replayed": []}
    await wait_for(lambda: output_events_once(tmp_path / "data" / "logs"))
    assert await redis.execute("XLEN", dead_letter_key("logs", 1)) == 0


def hda_dlq(valkey_url: str, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hda", "dlq", args[0], "--config", str(manifest),
         "--redis-url", valkey_url, "--stream", "logs", *args[1:]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_cli_lists_shows_and_replays_all_exactly_once(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    fixed = await dead_letter_one(processes, write_manifest, redis)
    processes.output(fixed, tmp_path / "data")
    url = processes.valkey.url
    listed = hda_dlq(url, fixed, "list")
    assert listed.returncode == 0, listed.stderr
    letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [letter["records"][0]["event"] for letter in letters] == [POISON]
    shown = hda_dlq(url, fixed, "show", letters[0]["id"])
    assert orjson.loads(shown.stdout) == letters[0]
    missing = hda_dlq(url, fixed, "show", "0/1-0")
    assert missing.returncode == 1
    assert "no dead letter '0/1-0'" in missing.stderr
    replayed = hda_dlq(url, fixed, "replay", "--all")
    assert orjson.loads(replayed.stdout) == {"replayed": [letters[0]["id"]]}
    again = hda_dlq(url, fixed, "replay", "--all")
    assert orjson.loads(again.stdout) == {"replayed": []}
    await wait_for(lambda: output_events_once(tmp_path / "data" / "logs"))
    assert hda_dlq(url, fixed, "list").stdout == ""
