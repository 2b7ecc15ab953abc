"""The chart's alerts and dashboard: `promtool test rules` on the rules file, and the dashboard's
shape. tests/runtime/test_monitoring_metrics.py checks their metric names against scrapes.

promtool is built from the Prometheus Go module by `make binaries` (tools/promtool).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.monitoring_support import (
    HEADER,
    TABLE_HEADING,
    Family,
    compare_with_docs,
    documented_metrics,
    scraped_families,
)

from hda.cluster.binaries import find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "charts" / "hda-operator" / "files"
RULES = CHART_FILES / "prometheus" / "rules.yaml"
RULES_TEST = Path(__file__).parent / "monitoring" / "rules_test.yaml"
DASHBOARD = CHART_FILES / "grafana" / "hda.json"
ALERTS = {
    "HdaLagGrowing",
    "HdaWorkersAtMaxReplicas",
    "HdaDeadLetters",
    "HdaOutputVolumeFull",
    "HdaNoDurableOutput",
    "HdaValkeyUnreachable",
}


def promtool() -> str:
    """The pinned promtool (tools/promtool), built by `make binaries` with the other binaries."""
    return str(find_bin_dir(("promtool",)) / "promtool")


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_unit_tests_fire_each_alert_and_keep_healthy_series_quiet() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_of_the_issue_is_tested_firing() -> None:
    rules = yaml.safe_load(RULES.read_text())
    defined = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert defined == ALERTS
    suite = yaml.safe_load(RULES_TEST.read_text())
    firing = {
        case["alertname"]
        for test in suite["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == ALERTS
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= rule["annotations"].keys()


def dashboard_targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        target
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Events per second",
        "Backlog per stream",
        "Latency from ingest to processed",
        "Dead letters",
        "Output volume use",
        "Reconciles per second",
        "Mean reconcile time",
    } <= titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    expressions = [target["expr"] for target in dashboard_targets(dashboard)]
    assert any("histogram_quantile(0.99" in expr for expr in expressions)
    # Every query goes through the data source variable, so the ConfigMap works in any Grafana.
    assert all(
        target["datasource"]["uid"] == "${datasource}" for target in dashboard_targets(dashboard)
    )
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "hda"}


# --- docs/monitoring.md's metrics table (what the scrape tests compare against) ---------------


def test_metrics_table_parses_with_types_and_labels() -> None:
    table = documented_metrics()
    assert table["hda_ingest_request_duration_seconds"] == Family(
        "histogram", frozenset({"route", "status_class"})
    )
    assert table["hda_operator_output_backlog_entries"] == Family(
        "gauge", frozenset({"namespace", "hda", "stream"})
    )
    assert table["hda_output_volume_size_bytes"] == Family("gauge", frozenset())


def test_a_malformed_metrics_row_names_its_line() -> None:
    text = f"# Monitoring\n\n{TABLE_HEADING}\n\n{HEADER}\n|---|---|---|---|\n| `hda_x` | meter | | x |\n"
    with pytest.raises(ValueError, match=r"line 7: not a metrics row"):
        documented_metrics(text)


def test_scrape_differences_name_the_metric() -> None:
    scraped = scraped_families(
        '# HELP hda_a_total a\n# TYPE hda_a_total counter\nhda_a_total{stream="s"} 1.0\n'
        "# HELP hda_b b\n# TYPE hda_b gauge\nhda_b 1.0\n"
    )
    documented = {
        "hda_a_total": Family("counter", frozenset({"stream", "code"})),
        "hda_c": Family("gauge", frozenset()),
    }
    assert compare_with_docs(scraped, documented) == [
        "hda_a_total: labels ['stream'] exported, ['code', 'stream'] documented",
        "hda_b: exported but not in docs/monitoring.md",
        "hda_c: documented but not exported",
    ]
