"""`hda load` and `hda tail` as a user runs them: real processes against a real pipeline."""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from tests.runtime.conftest import Processes, read_output_events, wait_for

from hda.runtime.load import LoadOptions
from hda.runtime.load import run_load as load

pytestmark = pytest.mark.runtime

HDA = [sys.executable, "-m", "hda"]


def run_load(port: int, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [*HDA, "load", f"http://127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


@pytest.mark.parametrize("transport", ["rest", "ws"])
async def test_load_sends_every_event_once_and_reports_the_acks(
    processes: Processes, write_manifest: Any, tmp_path: Path, transport: str
) -> None:
    manifest = write_manifest("    - {name: events, partitions: 2}\n")
    port = processes.ingest(manifest)
    processes.worker(manifest)
    processes.output(manifest, tmp_path / "data")

    report = run_load(
        port, "--events", "5000", "--batch", "300", "--transport", transport, "--producer", "t"
    )

    assert report["acked_events"] == 5000
    assert report["statuses"] == {"202": 17}
    directory = tmp_path / "data" / "events"
    await wait_for(lambda: len(read_output_events(directory)[0]) >= 5000, within=60)
    seen = collections.Counter(e["s"] for e in read_output_events(directory)[0] if e["p"] == "t")
    assert sorted(seen) == list(range(5000))
    assert set(seen.values()) == {1}


def test_load_names_a_refused_batch(processes: Processes, write_manifest: Any) -> None:
    port = processes.ingest(write_manifest("    - {name: events}\n"))
    result = subprocess.run(
        [*HDA, "load", f"http://127.0.0.1:{port}", "--stream", "nope", "--events", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "HTTP 404" in result.stderr


def test_tail_prints_durable_records_from_the_start(
    processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest("    - {name: events}\n")
    port = processes.ingest(manifest)
    processes.worker(manifest)
    _, output_port = processes.output(manifest, tmp_path / "data")
    run_load(port, "--events", "250", "--batch", "50")

    result = subprocess.run(
        [*HDA, "tail", f"ws://127.0.0.1:{output_port}/v1/streams/events/subscribe",
         "--count", "250", "--idle-timeout", "30"],
        capture_output=True, timeout=90, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["s"] for r in records for e in r["events"]) == list(range(250))
    assert b"250 events" in result.stderr


def test_tail_follows_the_whole_stream_of_two_output_replicas_with_the_token(
    processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest("    - {name: events, partitions: 3}\n")
    token = {"HDA_INGEST_TOKEN": "tail-token"}
    port = processes.ingest(manifest, env=token)
    processes.worker(manifest)
    output_ports = processes.output_replicas(manifest, tmp_path, 2, env=token)
    run_load(port, "--events", "600", "--batch", "20", "--in-flight", "8", "--token", "tail-token")

    result = subprocess.run(
        [*HDA, "tail", f"ws://127.0.0.1:{output_ports[1]}/v1/streams/events/subscribe",
         "--count", "600", "--idle-timeout", "30", "--token", "tail-token"],
        capture_output=True, timeout=90, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["s"] for r in records for e in r["events"]) == list(range(600))
    held = [read_output_events(tmp_path / f"output-{i}" / "events")[0] for i in range(2)]
    assert all(0 < len(events) < 600 for events in held)  # each replica wrote only part


def test_load_paces_batches_to_the_requested_rate(
    processes: Processes, write_manifest: Any
) -> None:
    port = processes.ingest(write_manifest("    - {name: events}\n"))

    report = run_load(port, "--events", "2000", "--batch", "100", "--rate", "1000")

    # The 20th batch is due 1.9 s after the start: pacing can only make a run longer.
    assert report["acked_events"] == 2000
    assert report["seconds"] >= 1.9


def test_tail_brief_prints_one_short_line_per_record(
    processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest("    - {name: events}\n")
    port = processes.ingest(manifest)
    processes.worker(manifest)
    _, output_port = processes.output(manifest, tmp_path / "data")
    run_load(port, "--events", "100", "--batch", "50", "--producer", "b")

    result = subprocess.run(
        [*HDA, "tail", f"ws://127.0.0.1:{output_port}/v1/streams/events/subscribe",
         "--count", "100", "--idle-timeout", "30", "--brief"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines
    assert all(re.match(r"^\d+/\d+-\d+ +\d+ events  first: \{", line) for line in lines), lines
    assert sum(int(line.split()[1]) for line in lines) == 100


@contextlib.asynccontextmanager
async def stand_in_ingest(
    events: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A real HTTP server on loopback answering POSTs to stream `events` with `events`; yields
    its base URL."""
    app = web.Application()
    app.router.add_post("/v1/streams/events/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_load_counts_a_refusal_without_retry_after_apart_and_names_resent_batches() -> None:
    """A stand-in ingest (real HTTP server) refuses once without Retry-After, once with it, then
    accepts: the report tells the two refusals apart, records each change of answer and names
    the batch as resent (its events may be stored twice)."""
    answers = [
        web.Response(status=503),
        web.Response(status=503, headers={"Retry-After": "0.1"}),
    ]

    async def events(request: web.Request) -> web.Response:
        await request.read()
        return answers.pop(0) if answers else web.Response(status=202)

    async with stand_in_ingest(events) as base_url:
        options = LoadOptions(base_url, "events", "t", events=10, batch=10, in_flight=1)
        report = await load(options)

    assert report.statuses == {"503 without Retry-After": 1, "503": 1, "202": 1}
    assert [status for _, status in report.timeline] == ["503 without Retry-After", "503", "202"]
    assert report.acked_events == 10
    assert report.resent_batches == [(0, 10)]


async def test_load_sends_a_batch_again_with_its_own_key_unique_to_the_run() -> None:
    """A stand-in ingest (real HTTP server) refuses every first attempt: each batch comes again
    with the key it had, batches have different keys, and a second run uses new ones."""
    keys: list[str] = []

    async def events(request: web.Request) -> web.Response:
        await request.read()
        keys.append(request.headers["Idempotency-Key"])
        if keys.count(keys[-1]) == 1:
            return web.Response(status=503, headers={"Retry-After": "0.05"})
        return web.Response(status=202, headers={"Idempotent-Replayed": "true"})

    async with stand_in_ingest(events) as base_url:
        options = LoadOptions(base_url, "events", "t", events=20, batch=10, in_flight=1)
        report = await load(options)
        first_run = list(keys)
        await load(options)

    assert first_run[0] == first_run[1] != first_run[2] == first_run[3]
    assert not set(first_run) & set(keys[4:])
    assert report.replayed_batches == 2
    assert report.resent_batches == [(0, 10), (10, 10)]
