"""The per-process Prometheus registry of the runtime and the operator (pure)."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from hda.api.v1alpha1 import load_manifest
from hda.controller.metrics import OperatorMetrics, Totals
from hda.controller.status import Lag, StreamLag
from hda.runtime.latency import output_latency
from hda.runtime.metrics import Metrics


def samples(metrics: Metrics | OperatorMetrics) -> list[str]:
    return [line for line in metrics.render().decode().splitlines() if not line.startswith("#")]


def values(metrics: OperatorMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, parsed as Prometheus parses it."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def per_hda(stream: str | None = None) -> frozenset[tuple[str, str]]:
    labels = {"namespace": "shop", "hda": "orders"} | ({"stream": stream} if stream else {})
    return frozenset(labels.items())


def test_two_registries_in_one_process_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.counter("hda_x_total", "help", ["stream"]).labels(stream="a").inc(2)
    second.counter("hda_x_total", "help", ["stream"]).labels(stream="a").inc(5)
    assert samples(first) == ['hda_x_total{stream="a"} 2.0']
    assert samples(second) == ['hda_x_total{stream="a"} 5.0']


def test_counters_keep_their_total_name_and_export_no_created_series() -> None:
    metrics = Metrics()
    metrics.counter("hda_x_total", "help").inc()
    text = metrics.render().decode()
    assert "# TYPE hda_x_total counter" in text
    assert "_created" not in text


def test_on_scrape_reads_the_value_at_each_scrape() -> None:
    written = [3]
    metrics = Metrics()
    metrics.on_scrape(lambda: [CounterMetricFamily("hda_written_total", "help", written[0])])
    assert samples(metrics) == ["hda_written_total 3.0"]
    written[0] = 8
    assert samples(metrics) == ["hda_written_total 8.0"]


def test_stage_latency_measures_from_the_entry_id_millisecond() -> None:
    metrics = Metrics()
    output_latency(metrics).observe("events", [b"1700000000000-0", b""], now=1_700_000_000.25)
    lines = samples(metrics)
    assert 'hda_output_latency_seconds_bucket{le="0.1",stream="events"} 0.0' in lines
    assert 'hda_output_latency_seconds_bucket{le="0.25",stream="events"} 1.0' in lines
    assert 'hda_output_latency_seconds_count{stream="events"} 1.0' in lines  # empty ID skipped


HDA = load_manifest(
    "apiVersion: hda.shitops.dev/v1alpha1\nkind: HyperDriveAccelerator\n"
    "metadata: {name: orders, namespace: shop}\n"
    "spec:\n  streams: [{name: events}]\n"
    "  workers: {autoscaling: {minReplicas: 1, maxReplicas: 7}}\n"
)
TOTALS = Totals(
    reconciles=3, reconcile_seconds=0.5, applies=2, status_writes=1, lag_probe_seconds=0.1
)


def test_operator_metrics_per_hda_and_forgotten_on_delete() -> None:
    metrics = OperatorMetrics(lambda: TOTALS)
    lag = Lag(
        streams=(
            StreamLag(name="events", lag=40, pending=2, length=100, output_lag=5, output_pending=1),
        )
    )
    metrics.observe_hda(("shop", "orders"), HDA, replicas=7, lag=lag)
    scraped = values(metrics)
    assert scraped["hda_operator_reconciles_total", frozenset()] == 3
    assert scraped["hda_operator_workers_replicas", per_hda()] == 7
    assert scraped["hda_operator_workers_max_replicas", per_hda()] == 7
    # The input backlog (what autoscaling reads) and the output's, apart.
    assert scraped["hda_operator_stream_backlog_entries", per_hda("events")] == 42
    assert scraped["hda_operator_output_backlog_entries", per_hda("events")] == 6
    # A failed probe keeps the last measured backlog rather than dropping to nothing.
    metrics.observe_hda(("shop", "orders"), HDA, replicas=7, lag=Lag(error="timeout"))
    assert values(metrics) == scraped
    metrics.forget(("shop", "orders"))
    assert not [line for line in samples(metrics) if 'hda="orders"' in line]
    assert values(metrics)["hda_operator_hdas", frozenset()] == 0
