"""docs/monitoring.md's metrics table and Prometheus scrapes, as the monitoring tests read them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
TABLE_HEADING = "## Metrics"
HEADER = "| name | type | labels | meaning |"
TYPES = frozenset({"counter", "gauge", "histogram"})


@dataclasses.dataclass(frozen=True)
class Family:
    type: str
    labels: frozenset[str]  # as documented, or as seen on the samples (without `le`)


def documented_metrics(text: str | None = None) -> dict[str, Family]:
    """The rows of the table under `## Metrics`; a malformed row is an error naming its line."""
    lines = (DOCS.read_text() if text is None else text).splitlines()
    start = lines.index(TABLE_HEADING)
    header = next(i for i in range(start, len(lines)) if lines[i] == HEADER)
    table: dict[str, Family] = {}
    for number, line in enumerate(lines[header + 2 :], start=header + 3):
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name_match = re.fullmatch(r"`(hda_\w+)`", cells[0])
        if len(cells) != 4 or name_match is None or cells[1] not in TYPES:
            raise ValueError(f"docs/monitoring.md line {number}: not a metrics row: {line!r}")
        name = name_match[1]
        if name in table:
            raise ValueError(f"docs/monitoring.md line {number}: {name} documented twice")
        labels = frozenset(re.findall(r"`(\w+)`", cells[2]))
        table[name] = Family(type=cells[1], labels=labels)
    return table


def scraped_families(text: str) -> dict[str, Family]:
    """Exported `hda_*` families by their exposed name (a counter's with `_total`), with the
    label names their samples carry."""
    families: dict[str, Family] = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        if not name.startswith("hda_"):
            continue
        labels = {label for sample in family.samples for label in sample.labels if label != "le"}
        families[name] = Family(type=family.type, labels=frozenset(labels))
    return families


def compare_with_docs(scraped: dict[str, Family], documented: dict[str, Family]) -> list[str]:
    """Every difference between a scrape and the documented rows it should match."""
    problems = [
        f"{name}: exported but not in docs/monitoring.md"
        for name in scraped.keys() - documented.keys()
    ]
    problems += [
        f"{name}: documented but not exported" for name in documented.keys() - scraped.keys()
    ]
    for name in scraped.keys() & documented.keys():
        seen, doc = scraped[name], documented[name]
        if seen.type != doc.type:
            problems.append(f"{name}: exported as a {seen.type}, documented as a {doc.type}")
        if seen.labels and seen.labels != doc.labels:
            problems.append(
                f"{name}: labels {sorted(seen.labels)} exported, {sorted(doc.labels)} documented"
            )
    return sorted(problems)


def label_selector(selector: dict[str, Any]) -> str:
    """A monitor's LabelSelector (matchLabels, matchExpressions In/Exists) as `kubectl -l` text,
    so that the API server does the matching."""
    terms = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        operator, key = expression["operator"], expression["key"]
        if operator not in {"In", "Exists"}:
            raise ValueError(f"selector operator {operator!r} of {key!r} is not handled here")
        terms.append(f"{key} in ({','.join(expression['values'])})" if operator == "In" else key)
    return ",".join(terms)
