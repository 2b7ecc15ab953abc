"""The operator's Prometheus `/metrics`: reconcile figures, and per HDA the worker replicas, their
autoscaling bound and the stream backlog the lag probe measured.

Served on its own port (`hda operator --metrics-port`), because kopf's liveness server answers
only its own path. The dashboard and the PrometheusRule in the chart read these series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.runtime.metrics import Metrics

from .status import Lag

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = Metrics()
        describe = self.registry.describe
        describe("hda_operator_reconciles_total", "counter", "Reconciles of HDAs")
        describe("hda_operator_reconcile_seconds_total", "counter", "Seconds spent reconciling")
        describe("hda_operator_applies_total", "counter", "Server-side applies of children")
        describe("hda_operator_status_writes_total", "counter", "HDA status writes")
        describe("hda_operator_lag_probe_seconds_total", "counter", "Seconds spent probing lag")
        describe("hda_operator_hdas", "gauge", "HDAs this operator reconciles")
        describe("hda_operator_workers_replicas", "gauge", "Worker replicas the operator set")
        describe(
            "hda_operator_workers_max_replicas",
            "gauge",
            "spec.workers.autoscaling.maxReplicas (absent without autoscaling)",
        )
        describe(
            "hda_operator_stream_backlog_entries",
            "gauge",
            "Entries not yet processed by the workers (undelivered plus pending), per stream",
        )
        self._per_hda: dict[Key, tuple[int, int | None, dict[str, int]]] = {}

    def observe_hda(self, key: Key, hda: HyperDriveAccelerator, *, replicas: int, lag: Lag) -> None:
        autoscaling = hda.spec.workers.autoscaling
        backlog = {stream.name: (stream.lag or 0) + stream.pending for stream in lag.streams}
        previous = self._per_hda.get(key)
        if not lag.known and previous is not None:
            backlog = previous[2]  # keep the last measured figures while the probe fails
        self._per_hda[key] = (
            replicas,
            autoscaling.max_replicas if autoscaling else None,
            backlog,
        )

    def forget(self, key: Key) -> None:
        self._per_hda.pop(key, None)

    def render(
        self,
        *,
        reconciles: int,
        reconcile_seconds: float,
        applies: int,
        status_writes: int,
        lag_probe_seconds: float,
    ) -> str:
        registry = self.registry
        registry.set("hda_operator_reconciles_total", reconciles)
        registry.set("hda_operator_reconcile_seconds_total", reconcile_seconds)
        registry.set("hda_operator_applies_total", applies)
        registry.set("hda_operator_status_writes_total", status_writes)
        registry.set("hda_operator_lag_probe_seconds_total", lag_probe_seconds)
        registry.set("hda_operator_hdas", len(self._per_hda))
        for name in (
            "hda_operator_workers_replicas",
            "hda_operator_workers_max_replicas",
            "hda_operator_stream_backlog_entries",
        ):
            registry.clear(name)  # deleted HDAs disappear
        for (namespace, hda), (replicas, max_replicas, backlog) in self._per_hda.items():
            registry.set("hda_operator_workers_replicas", replicas, namespace=namespace, hda=hda)
            if max_replicas is not None:
                registry.set(
                    "hda_operator_workers_max_replicas", max_replicas, namespace=namespace, hda=hda
                )
            for stream, entries in backlog.items():
                registry.set(
                    "hda_operator_stream_backlog_entries",
                    entries,
                    namespace=namespace,
                    hda=hda,
                    stream=stream,
                )
        return registry.render()


async def serve_metrics(render: Callable[[], str], host: str, port: int) -> web.AppRunner:
    """Start `GET /metrics` on host:port; the caller cleans the runner up at shutdown."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("operator metrics listening", extra={"host": host, "port": port})
    return runner
