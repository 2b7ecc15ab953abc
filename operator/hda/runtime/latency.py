"""Latency since ingest, as a histogram: an input entry's stream ID is the millisecond Valkey
accepted it from ingest, so any later stage can tell how long an entry took to reach it.

The worker observes `hda_worker_latency_seconds` when it commits an entry's results; output
observes `hda_output_latency_seconds` (end to end: ingest's acknowledgement to durable output) with
the `src` IDs of the records it made durable, right after the fsync.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .codec import parse_stream_id
from .metrics import Metrics

WORKER_LATENCY = "hda_worker_latency_seconds"
OUTPUT_LATENCY = "hda_output_latency_seconds"


class StageLatency:
    def __init__(self, metrics: Metrics, name: str, help_text: str) -> None:
        self.histogram = metrics.histogram(name, help_text, ["stream"])

    def observe(
        self, stream: str, input_ids: Iterable[bytes | str], now: float | None = None
    ) -> None:
        """One sample per input entry ID (`ms-seq`); empty IDs (no source) are skipped."""
        now_ms = (time.time() if now is None else now) * 1000
        histogram = self.histogram.labels(stream=stream)
        for input_id in input_ids:
            if input_id:
                accepted_ms = parse_stream_id(input_id)[0]
                histogram.observe(max(0.0, now_ms - accepted_ms) / 1000)


def worker_latency(metrics: Metrics) -> StageLatency:
    return StageLatency(
        metrics,
        WORKER_LATENCY,
        "Seconds from ingest accepting an entry to a worker committing its results to output",
    )


def output_latency(metrics: Metrics) -> StageLatency:
    return StageLatency(
        metrics,
        OUTPUT_LATENCY,
        "Seconds from ingest accepting an entry to output making its results durable (fsync)",
    )
