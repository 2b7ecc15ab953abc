"""Segment retention in a real `hda output`: old segments go by age and by total bytes, the one
being written stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.runtime.conftest import Processes, group_idle, wait_for

from hda.runtime.codec import output_key
from hda.runtime.config import OUTPUT_GROUP, load_config
from hda.runtime.embedded import free_port
from hda.runtime.groups import ensure_groups
from hda.runtime.resp import RespConnection
from hda.runtime.segment_retention import scan_volume
from hda.runtime.segments import list_segments

pytestmark = pytest.mark.runtime

PAD = "x" * 400


def start_output(processes: Processes, manifest: Path, data_dir: Path) -> None:
    port = free_port()
    processes.start(
        "output-0", "output", manifest, "--port", str(port), "--data-dir", str(data_dir),
        "--retention-interval", "0.2", ready_port=port,
    )  # fmt: skip


async def write_entries(redis: RespConnection, count: int) -> None:
    for i in range(count):
        await redis.execute(
            "XADD", output_key("out", 0), "*", "src", "1-1", "n", 1,
            "d", orjson.dumps({"i": i, "pad": PAD}),
        )  # fmt: skip
    await wait_for(lambda: group_idle(redis, [output_key("out", 0)], OUTPUT_GROUP))


async def test_old_segments_are_deleted_once_the_volume_total_passes_max_bytes(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: out, partitions: 1}\n",
        "  output:\n    sinks:\n      segmentFiles:\n        maxSegmentBytes: '2048'\n"
        "        retention: {maxTotalBytes: '8192'}\n",
    )
    await ensure_groups(redis, load_config(manifest))
    start_output(processes, manifest, tmp_path / "data")
    await write_entries(redis, 60)  # ~27 KiB: about 13 segments of 2 KiB
    directory = tmp_path / "data" / "out"

    def within_limit() -> bool:
        # scan_volume skips a file that retention deletes between listing and stat
        return sum(s.size for s in scan_volume(tmp_path / "data", ["out"])["out"]) <= 8192

    await wait_for(within_limit)
    numbers = [number for number, _ in list_segments(directory)]
    assert numbers[0] > 0  # the oldest went
    assert numbers == list(range(numbers[0], numbers[-1] + 1))  # oldest first, no gaps
    # the newest record is still on disk: the segment being written is never deleted
    assert b'"i":59' in list_segments(directory)[-1][1].read_bytes()


async def test_segments_older_than_max_age_are_deleted_but_not_the_current_one(
    processes: Processes, write_manifest: Any, redis: RespConnection, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: out, partitions: 1}\n",
        "  output:\n    sinks:\n      segmentFiles:\n        maxSegmentBytes: '2048'\n"
        "        retention: {maxAge: 2s}\n",
    )
    await ensure_groups(redis, load_config(manifest))
    start_output(processes, manifest, tmp_path / "data")
    await write_entries(redis, 30)
    directory = tmp_path / "data" / "out"
    assert len(list_segments(directory)) > 3
    newest = list_segments(directory)[-1][0]
    await wait_for(lambda: len(list_segments(directory)) == 1, within=30)
    assert list_segments(directory)[0][0] == newest
