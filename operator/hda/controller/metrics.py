"""The operator's Prometheus `/metrics`: reconcile figures, and per HDA the worker replicas, their
autoscaling bound and the stream backlogs the lag probe measured (the workers' input, and the
output stream's entries not yet durable).

Served on its own port (`hda operator --metrics-port`), because kopf's liveness server answers
only its own path. The dashboard and the PrometheusRule in the chart read these series. Every
value lives elsewhere (the controller's `Stats`, the last observation of each HDA), so the
families are built at each scrape from one per-process `Metrics` registry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.runtime.metrics import CONTENT_TYPE, Metrics

from .status import Lag

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
HDA_LABELS = ("namespace", "hda")


@dataclasses.dataclass(frozen=True)
class Totals:
    """The controller's running totals, read at each scrape."""

    reconciles: int
    reconcile_seconds: float
    applies: int
    status_writes: int
    lag_probe_seconds: float


@dataclasses.dataclass(frozen=True)
class HdaFigures:
    replicas: int
    max_replicas: int | None
    backlog: dict[str, int]  # stream -> input entries not yet processed by the workers
    output_backlog: dict[str, int]  # stream -> output entries not yet durable


class OperatorMetrics:
    def __init__(self, totals: Callable[[], Totals]) -> None:
        self.totals = totals
        self.registry = Metrics()
        self.registry.on_scrape(self.collect)
        self._per_hda: dict[Key, HdaFigures] = {}

    def observe_hda(self, key: Key, hda: HyperDriveAccelerator, *, replicas: int, lag: Lag) -> None:
        autoscaling = hda.spec.workers.autoscaling
        previous = self._per_hda.get(key)
        if lag.known or previous is None:
            backlog = {s.name: (s.lag or 0) + s.pending for s in lag.streams}
            output_backlog = {s.name: s.output_backlog for s in lag.streams}
        else:  # keep the last measured figures while the probe fails
            backlog, output_backlog = previous.backlog, previous.output_backlog
        self._per_hda[key] = HdaFigures(
            replicas=replicas,
            max_replicas=autoscaling.max_replicas if autoscaling else None,
            backlog=backlog,
            output_backlog=output_backlog,
        )

    def forget(self, key: Key) -> None:
        self._per_hda.pop(key, None)

    def render(self) -> bytes:
        return self.registry.render()

    def collect(self) -> list[Metric]:
        totals = self.totals()
        families: list[Metric] = [
            CounterMetricFamily(
                "hda_operator_reconciles_total", "Reconciles of HDAs", totals.reconciles
            ),
            CounterMetricFamily(
                "hda_operator_reconcile_seconds_total",
                "Seconds spent reconciling",
                totals.reconcile_seconds,
            ),
            CounterMetricFamily(
                "hda_operator_applies_total", "Server-side applies of children", totals.applies
            ),
            CounterMetricFamily(
                "hda_operator_status_writes_total", "HDA status writes", totals.status_writes
            ),
            CounterMetricFamily(
                "hda_operator_lag_probe_seconds_total",
                "Seconds spent probing lag",
                totals.lag_probe_seconds,
            ),
            GaugeMetricFamily(
                "hda_operator_hdas", "HDAs this operator reconciles", len(self._per_hda)
            ),
        ]
        replicas = GaugeMetricFamily(
            "hda_operator_workers_replicas", "Worker replicas the operator set", labels=HDA_LABELS
        )
        max_replicas = GaugeMetricFamily(
            "hda_operator_workers_max_replicas",
            "spec.workers.autoscaling.maxReplicas (absent without autoscaling)",
            labels=HDA_LABELS,
        )
        backlog = GaugeMetricFamily(
            "hda_operator_stream_backlog_entries",
            "Input entries not yet processed by the workers (undelivered plus pending), per "
            "stream; what autoscaling reads",
            labels=(*HDA_LABELS, "stream"),
        )
        output_backlog = GaugeMetricFamily(
            "hda_operator_output_backlog_entries",
            "Output-stream entries not yet durable (undelivered plus pending for output), per "
            "stream",
            labels=(*HDA_LABELS, "stream"),
        )
        for (namespace, hda), figures in self._per_hda.items():
            replicas.add_metric([namespace, hda], figures.replicas)
            if figures.max_replicas is not None:
                max_replicas.add_metric([namespace, hda], figures.max_replicas)
            for stream, entries in figures.backlog.items():
                backlog.add_metric([namespace, hda, stream], entries)
            for stream, entries in figures.output_backlog.items():
                output_backlog.add_metric([namespace, hda, stream], entries)
        return [*families, replicas, max_replicas, backlog, output_backlog]


async def serve_metrics(render: Callable[[], bytes], host: str, port: int) -> web.AppRunner:
    """Start `GET /metrics` on host:port; the caller cleans the runner up at shutdown."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("operator metrics listening", extra={"host": host, "port": port})
    return runner
