"""What the runtime processes export, against what the chart queries and the docs promise.

`hda run` starts ingest, a worker and output as real processes; events (one dead-lettered), an
OTLP log and a refused request go through, and the three /metrics are scraped:

- each metric name in the dashboard's and the rules' expressions is a declared family (`# TYPE`),
  a histogram's `_bucket`/`_sum`/`_count` counting as its family;
- docs/monitoring.md's table of runtime metrics and the scrapes agree, in both directions (name,
  type, labels);
- the ingest request and end-to-end latency histograms hold the samples of that traffic.

The operator's `hda_operator_*` series are checked against a running operator in
tests/cluster/test_operator.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.runtime.conftest import wait_for
from tests.unit.monitoring_support import compare_with_docs, documented_metrics, scraped_families

from hda.runtime.embedded import free_port
from hda.runtime.local import wait_ready

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
        assert response.content_type == "text/plain"
        return await response.text()


def value(text: str, sample_name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape, parsed as Prometheus parses it; None if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return float(sample.value)
    return None


class HdaRun:
    def __init__(self, ingest: int, worker: int, output: int) -> None:
        self.ingest, self.worker, self.output = ingest, worker, output


@pytest.fixture
def hda_run(write_manifest: Any, tmp_path: Path) -> Iterator[HdaRun]:
    manifest = write_manifest(
        "    - {name: events, partitions: 2}\n    - {name: logs}\n",
        "  ingest:\n    otlp: {logs: logs}\n  workers:\n    maxDeliveries: 1\n"
        "    pipeline:\n      - parseJson: {field: raw}\n",
    )
    ports = HdaRun(free_port(), free_port(), free_port())
    process = subprocess.Popen(
        [
            sys.executable, "-m", "hda.runtime", "run", str(manifest),
            "--data-dir", str(tmp_path / "run"), "--workers", "1",
            "--ingest-port", str(ports.ingest), "--output-port", str(ports.output),
            "--worker-port", str(ports.worker),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for port in (ports.ingest, ports.worker, ports.output):
            wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=60)
        yield ports
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str, status: int
) -> None:
    async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
        assert response.status == status, await response.text()


async def test_runtime_scrapes_match_the_docs_dashboard_and_alerts(hda_run: HdaRun) -> None:
    ingest = f"http://127.0.0.1:{hda_run.ingest}"
    async with aiohttp.ClientSession() as session:
        # One good event and one the pipeline dead-letters (raw is not JSON).
        body = b'{"raw": "{\\"ok\\": 1}"}\n{"raw": "not json"}\n'
        await post(session, f"{ingest}/v1/streams/events/events", body, "application/x-ndjson", 202)
        await post(session, f"{ingest}/v1/streams/nope/events", b"{}", "application/json", 404)
        log = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]}
        await post(session, f"{ingest}/v1/logs", json.dumps(log).encode(), "application/json", 200)

        async def durable() -> bool:
            text = await scrape(session, hda_run.output)
            return all(
                value(text, "hda_output_entries_total", stream=stream) == 1
                for stream in ("events", "logs")
            )

        await wait_for(durable)
        texts = [
            await scrape(session, port) for port in (hda_run.ingest, hda_run.worker, hda_run.output)
        ]
    ingest_text, worker_text, output_text = texts

    declared: dict[str, str] = {}
    for text in texts:
        declared.update(families(text))
    runtime_names = {n for n in queried_metric_names() if not n.startswith("hda_operator_")}
    assert runtime_names, "the dashboard and rules query runtime metrics"
    missing = {n for n in runtime_names if not exported(n, declared)}
    assert not missing, f"queried but not exported: {sorted(missing)}"

    scraped = {}
    for text in texts:
        scraped.update(scraped_families(text))
    documented = {
        name: family
        for name, family in documented_metrics().items()
        if not name.startswith("hda_operator_")
    }
    assert compare_with_docs(scraped, documented) == []

    # Ingest request latency: the 202 and the OTLP 200 as 2xx of their routes, the 404 as 4xx.
    duration = "hda_ingest_request_duration_seconds_count"
    events_route = "/v1/streams/{stream}/events"
    assert value(ingest_text, duration, route=events_route, status_class="2xx") == 1
    assert value(ingest_text, duration, route=events_route, status_class="4xx") == 1
    assert value(ingest_text, duration, route="/v1/logs", status_class="2xx") == 1
    # End to end: one sample per input entry made durable (the request was one entry).
    assert value(output_text, "hda_output_latency_seconds_count", stream="events") == 1
    assert value(worker_text, "hda_worker_latency_seconds_count", stream="events") == 1
    assert value(worker_text, "hda_worker_dead_letters_total", stream="events") == 1
