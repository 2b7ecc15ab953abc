"""The Prometheus text registry of the runtime and the operator (pure)."""

from __future__ import annotations

from hda.api.v1alpha1 import load_manifest
from hda.controller.metrics import OperatorMetrics
from hda.controller.status import Lag, StreamLag
from hda.runtime.metrics import Metrics


def test_histogram_renders_cumulative_buckets_sum_and_count() -> None:
    metrics = Metrics()
    metrics.describe_histogram("x_seconds", "help", [0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 7.0):
        metrics.observe("x_seconds", value, stream="a")
    lines = metrics.render().splitlines()
    assert lines == [
        "# HELP x_seconds help",
        "# TYPE x_seconds histogram",
        'x_seconds_bucket{stream="a",le="0.1"} 2',  # le is inclusive
        'x_seconds_bucket{stream="a",le="1"} 3',
        'x_seconds_bucket{stream="a",le="+Inf"} 4',
        'x_seconds_sum{stream="a"} 7.65',
        'x_seconds_count{stream="a"} 4',
    ]


def test_cleared_gauge_drops_its_series_but_keeps_its_family() -> None:
    metrics = Metrics()
    metrics.describe("g", "gauge", "help")
    metrics.set("g", 1, hda="gone")
    metrics.clear("g")
    assert metrics.render() == "# HELP g help\n# TYPE g gauge\n"


HDA = load_manifest(
    "apiVersion: hda.shitops.dev/v1alpha1\nkind: HyperDriveAccelerator\n"
    "metadata: {name: orders, namespace: shop}\n"
    "spec:\n  streams: [{name: events}]\n"
    "  workers: {autoscaling: {minReplicas: 1, maxReplicas: 7}}\n"
)


def render(metrics: OperatorMetrics) -> list[str]:
    text = metrics.render(
        reconciles=3, reconcile_seconds=0.5, applies=2, status_writes=1, lag_probe_seconds=0.1
    )
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_operator_metrics_per_hda_and_forgotten_on_delete() -> None:
    metrics = OperatorMetrics()
    lag = Lag(streams=(StreamLag(name="events", lag=40, pending=2, length=100),))
    metrics.observe_hda(("shop", "orders"), HDA, replicas=7, lag=lag)
    lines = render(metrics)
    assert "hda_operator_reconciles_total 3" in lines
    assert 'hda_operator_workers_replicas{hda="orders",namespace="shop"} 7' in lines
    assert 'hda_operator_workers_max_replicas{hda="orders",namespace="shop"} 7' in lines
    assert (
        'hda_operator_stream_backlog_entries{hda="orders",namespace="shop",stream="events"} 42'
        in lines
    )
    # A failed probe keeps the last measured backlog rather than dropping to nothing.
    metrics.observe_hda(("shop", "orders"), HDA, replicas=7, lag=Lag(error="timeout"))
    assert (
        'hda_operator_stream_backlog_entries{hda="orders",namespace="shop",stream="events"} 42'
        in render(metrics)
    )
    metrics.forget(("shop", "orders"))
    assert not [line for line in render(metrics) if 'hda="orders"' in line]
    assert "hda_operator_hdas 0" in render(metrics)
