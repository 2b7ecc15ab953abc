"""Every metric the chart's dashboard and alerts query is one the running processes export.

Ingest, a worker and output run as real processes; their /metrics are scraped and each metric
name in the dashboard's and the rules' expressions must be a declared family (`# TYPE`), a
histogram's `_bucket`/`_sum`/`_count` counting as its family. The operator's `hda_operator_*`
series are checked against a running operator in tests/cluster/test_operator_metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.runtime.conftest import Processes, wait_for

from hda.runtime.embedded import free_port
from hda.runtime.latency import output_latency
from hda.runtime.metrics import Metrics
from hda.runtime.volume import SIZE, VolumeGauges

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "charts" / "hda-operator" / "files"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def queried_metric_names() -> set[str]:
    dashboard = json.loads((CHART_FILES / "grafana" / "hda.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    rules = yaml.safe_load((CHART_FILES / "prometheus" / "rules.yaml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {name for expr in [*expressions, *variables] for name in re.findall(r"\bhda_\w+", expr)}


def families(text: str) -> dict[str, str]:
    """Metric family -> type, from the `# TYPE` lines of a Prometheus text exposition."""
    return {
        match.group(1): match.group(2)
        for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
    }


def exported(name: str, declared: dict[str, str]) -> bool:
    if name in declared:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and declared.get(name.removesuffix(suffix)) == "histogram":
            return True
    return False


async def scrape(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_every_queried_runtime_metric_is_exported(
    processes: Processes, write_manifest: Any, tmp_path: Path
) -> None:
    manifest = write_manifest(
        "    - {name: events, partitions: 2}\n",
        "  ingest:\n    otlp: {logs: events}\n  workers:\n    maxDeliveries: 1\n"
        "    pipeline:\n      - parseJson: {field: raw}\n",
    )
    ingest_port = processes.ingest(manifest)
    worker_port = free_port()
    processes.start(
        "worker-0", "worker", manifest, "--port", str(worker_port), ready_port=worker_port
    )
    _, output_port = processes.output(manifest, tmp_path / "data")
    async with aiohttp.ClientSession() as session:
        # One good event and one the pipeline dead-letters (raw is not JSON).
        body = b'{"raw": "{\\"ok\\": 1}"}\n{"raw": "not json"}\n'
        async with session.post(
            f"http://127.0.0.1:{ingest_port}/v1/streams/events/events",
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
        ) as response:
            assert response.status == 202

        async def durable() -> bool:
            return 'hda_output_events_total{stream="events"} 1' in await scrape(
                session, output_port
            )

        await wait_for(durable)
        texts = [await scrape(session, port) for port in (ingest_port, worker_port, output_port)]
    declared: dict[str, str] = {}
    for text in texts:
        declared.update(families(text))
    runtime_names = {n for n in queried_metric_names() if not n.startswith("hda_operator_")}
    assert runtime_names, "the dashboard and rules query runtime metrics"
    missing = {n for n in runtime_names if not exported(n, declared)}
    assert not missing, f"queried but not exported: {sorted(missing)}"
    # The latency histogram has samples, not just a declaration.
    assert re.search(r'^hda_worker_latency_seconds_count\{stream="events"\} 1$', texts[1], re.M)
    assert re.search(r'^hda_worker_dead_letters_total\{stream="events"\} 1$', texts[1], re.M)


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no sample of {name}"
    return float(match[1])


def test_output_modules_export_what_the_dashboard_and_alert_query(tmp_path: Path) -> None:
    metrics = Metrics()
    VolumeGauges(metrics, tmp_path).update()
    output_latency(metrics).observe("events", [b"1700000000000-0"], now=1_700_000_000.25)
    text = metrics.render()
    output_families = {
        "hda_output_volume_used_bytes",
        "hda_output_volume_size_bytes",
        "hda_output_latency_seconds_bucket",
    }
    assert all(exported(name, families(text)) for name in output_families)
    assert 'hda_output_latency_seconds_bucket{stream="events",le="0.25"} 1' in text
    used, size = sample(text, "hda_output_volume_used_bytes"), sample(text, SIZE)
    assert 0 < used <= size
