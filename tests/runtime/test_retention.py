"""Trimming against a real Valkey: never past the slowest group's pending or undelivered entries."""

from __future__ import annotations

import pytest

from hda.runtime.codec import dead_letter_key
from hda.runtime.config import RuntimeConfig, StreamConfig
from hda.runtime.resp import RespConnection
from hda.runtime.retention import trim_dead_letters, trim_key
from hda.runtime.worker import trim_streams

pytestmark = pytest.mark.runtime


async def test_trim_stops_at_the_oldest_entry_any_group_still_needs(redis: RespConnection) -> None:
    key = "{hda:t:0}:in"
    ids = [await redis.execute("XADD", key, "*", "i", i) for i in range(10)]
    await redis.execute("XGROUP", "CREATE", key, "fast", "0")
    await redis.execute("XGROUP", "CREATE", key, "slow", "0")
    await redis.execute("XREADGROUP", "GROUP", "fast", "c", "COUNT", 8, "STREAMS", key, ">")
    await redis.execute("XACK", key, "fast", *[i for n, i in enumerate(ids[:8]) if n != 3])
    await redis.execute("XREADGROUP", "GROUP", "slow", "c", "COUNT", 6, "STREAMS", key, ">")
    await redis.execute("XACK", key, "slow", *ids[:6])
    # fast still needs ids[3] (pending); slow needs ids[6] (next undelivered)
    removed = await trim_key(redis, key, now_ms=0, max_age_seconds=None, max_length=None)
    assert removed == 3
    remaining = [row[0] for row in await redis.execute("XRANGE", key, "-", "+")]
    assert remaining == ids[3:]


async def test_retention_keeps_consumed_entries_until_its_own_limit(redis: RespConnection) -> None:
    key = "{hda:t:1}:in"
    ids = [await redis.execute("XADD", key, "*", "i", i) for i in range(6)]
    await redis.execute("XGROUP", "CREATE", key, "g", "$")  # everything already passed
    now_ms = int(ids[-1].split(b"-")[0]) + 10_000
    kept = await trim_key(redis, key, now_ms=now_ms, max_age_seconds=3600, max_length=None)
    assert kept == 0  # all younger than an hour: retention keeps them although consumed
    removed = await trim_key(redis, key, now_ms=now_ms, max_age_seconds=1, max_length=None)
    assert removed == 6


async def test_no_group_means_no_trim(redis: RespConnection) -> None:
    key = "{hda:t:2}:in"
    for i in range(3):
        await redis.execute("XADD", key, "*", "i", i)
    assert await trim_key(redis, key, now_ms=10**13, max_age_seconds=1, max_length=1) == 0
    assert await redis.execute("XLEN", key) == 3


async def test_dead_letters_are_trimmed_to_their_length_limit(redis: RespConnection) -> None:
    key = "{hda:t:3}:dlq"
    ids = [await redis.execute("XADD", key, "*", "i", i) for i in range(8)]
    now_ms = int(ids[-1].split(b"-")[0])
    removed = await trim_dead_letters(redis, key, now_ms=now_ms, max_age_seconds=3600, max_length=3)
    assert removed == 5
    assert [row[0] for row in await redis.execute("XRANGE", key, "-", "+")] == ids[5:]


async def test_dead_letters_are_trimmed_by_age(redis: RespConnection) -> None:
    key = "{hda:t:4}:dlq"
    await redis.execute("XADD", key, "1000-0", "i", "old")
    await redis.execute("XADD", key, "5000-0", "i", "older-than-limit")
    await redis.execute("XADD", key, "9000-0", "i", "young")
    removed = await trim_dead_letters(redis, key, now_ms=10_000, max_age_seconds=2, max_length=100)
    assert removed == 2
    assert [row[0] for row in await redis.execute("XRANGE", key, "-", "+")] == [b"9000-0"]


async def test_worker_trim_pass_applies_dead_letter_retention(redis: RespConnection) -> None:
    config = RuntimeConfig(
        streams=(StreamConfig(name="t5", partitions=1),),
        dead_letter_max_length=2,
        dead_letter_max_age_seconds=3600,
    )
    key = dead_letter_key("t5", 0)
    for i in range(5):
        await redis.execute("XADD", key, "*", "i", i)
    await trim_streams(redis, config)
    assert await redis.execute("XLEN", key) == 2
