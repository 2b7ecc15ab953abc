"""One Prometheus registry per process, on `prometheus_client`.

Every process (ingest, worker, output, the operator) makes one `Metrics` and declares its series
on it; `/metrics` answers `render()` with `CONTENT_TYPE`. A private `CollectorRegistry` rather than
the library's global default, so that several components in one process (`hda run`, the tests)
never collide. Values that live elsewhere (a writer's counters, the operator's per-HDA figures)
are read at scrape time through `on_scrape`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

# No `*_created` series next to every counter and histogram: nothing of ours reads them, and
# they would double the series count of every scrape.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds from a few milliseconds (a quiet pipeline) to minutes (a backlog being worked off).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

# One ingest request, from its first byte read to the reply: sub-millisecond to a Valkey deadline.
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _ScrapeTime:
    """A collector whose families are computed by a function at each scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """`name` ends in `_total`, as exported (prometheus_client keeps the suffix)."""
        return Counter(name, help_text, labels, registry=self.registry)

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, help_text, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(name, help_text, labels, registry=self.registry, buckets=buckets)

    def on_scrape(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Series read from elsewhere at each scrape (e.g. `CounterMetricFamily`s)."""
        self.registry.register(_ScrapeTime(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)
