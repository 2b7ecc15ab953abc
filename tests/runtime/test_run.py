"""`hda run FILE.yaml`: the whole pipeline as local processes on the embedded Valkey."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.runtime.conftest import read_output_events

from hda.runtime.embedded import free_port
from hda.runtime.local import wait_ready

pytestmark = pytest.mark.runtime


def test_hda_run_moves_events_and_ctrl_c_stops_everything(
    write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: events, partitions: 2}\n",
        "  workers:\n    replicas: 2\n    pipeline:\n      - setFields: {fields: {seen: true}}\n",
    )
    ingest_port, output_port = free_port(), free_port()
    data = tmp_path / "run"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hda.runtime",
            "run",
            str(manifest),
            "--data-dir",
            str(data),
            "--ingest-port",
            str(ingest_port),
            "--output-port",
            str(output_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{ingest_port}/readyz", timeout=60)
        body = b"\n".join(orjson.dumps({"i": i}) for i in range(1000))
        request = urllib.request.Request(
            f"http://127.0.0.1:{ingest_port}/v1/streams/events/events",
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310 (a local http URL)
            assert response.status == 202
        deadline = time.monotonic() + 60
        while len(read_output_events(data / "output" / "events")[0]) < 1000:
            assert time.monotonic() < deadline, "events did not reach the output"
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output.decode()
    assert b"stopped" in output
    events, _ = read_output_events(data / "output" / "events")
    assert sorted(e["i"] for e in events) == list(range(1000))
    assert all(e["seen"] is True for e in events)
    # every child stopped cleanly: each worker logged its own orderly exit
    for name in ("worker-0", "worker-1"):
        assert "worker stopped" in (data / "logs" / f"{name}.log").read_text()
