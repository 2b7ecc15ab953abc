"""`hda bench` as a user runs it: a real run, briefly, that prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.runtime


def test_bench_of_a_routed_stream_with_keys_prints_a_sustained_rate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hda", "bench", "--seconds", "1", "--connections", "4",
         "--events-per-request", "50", "--partition-key", "--idempotency-keys"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "routed by partitionKey host (64 hosts)" in result.stdout
    assert "an Idempotency-Key on every request" in result.stdout
    sustained = re.search(r"\| \(b\) pipeline sustained .*\| ([\d,]+) events/s \|", result.stdout)
    assert sustained is not None, result.stdout
    assert int(sustained.group(1).replace(",", "")) > 0
