"""`hda run` on a replicated or cluster manifest: it starts that topology from the embedded
valkey-server, each server visible with its role, events flow, and Ctrl-C stops every server."""

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

EXPECTED_ROLES = {
    "replicated": {
        "valkey-primary.conf", "valkey-replica-1.conf", "valkey-replica-2.conf",
        "sentinel-1.conf", "sentinel-2.conf", "sentinel-3.conf",
    },
    "cluster": {
        f"valkey-shard{shard}-{role}.conf"
        for shard in (1, 2, 3)
        for role in ("primary", "replica-1")
    },
}  # fmt: skip
REDIS_SPEC = {"replicated": "{topology: replicated}", "cluster": "{topology: cluster}"}


def valkey_processes(data: Path) -> list[str]:
    """Command lines (process titles) of the valkey-servers running under `data`."""
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "args="], capture_output=True, text=True, check=True
    )
    return [
        line
        for line in listing.stdout.splitlines()
        if "valkey-server" in line and str(data) in line
    ]


@pytest.mark.parametrize("topology", ["replicated", "cluster"])
def test_hda_run_starts_the_topology_with_named_servers(
    topology: str, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: events, partitions: 4}\n", f"  redis: {REDIS_SPEC[topology]}\n"
    )
    ingest_port, output_port = free_port(), free_port()
    data = tmp_path / "run"
    run = subprocess.Popen(
        [
            sys.executable, "-m", "hda.runtime", "run", str(manifest), "--data-dir", str(data),
            "--ingest-port", str(ingest_port), "--output-port", str(output_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{ingest_port}/readyz", timeout=90)
        titles = valkey_processes(data)
        roles = {title.rsplit("/", 1)[-1] for title in titles}
        assert roles == EXPECTED_ROLES[topology], titles
        body = b"\n".join(orjson.dumps({"i": i}) for i in range(1000))
        for _ in range(4):  # round-robin: one request per partition
            request = urllib.request.Request(
                f"http://127.0.0.1:{ingest_port}/v1/streams/events/events",
                data=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            with urllib.request.urlopen(request) as response:  # noqa: S310 (a local http URL)
                assert response.status == 202
        deadline = time.monotonic() + 60
        while len(read_output_events(data / "output" / "events")[0]) < 4000:
            assert time.monotonic() < deadline, "events did not reach the output"
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output.decode()
    assert valkey_processes(data) == []
