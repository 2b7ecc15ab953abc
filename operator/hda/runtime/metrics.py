"""A tiny Prometheus text-format registry: counters, gauges and histograms with fixed label sets."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

# Seconds from a few milliseconds (a quiet pipeline) to minutes (a backlog being worked off).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}
        # name -> labels -> (count per bucket, not cumulative; the last is +Inf), sum
        self._histograms: dict[str, dict[Labels, tuple[list[int], list[float]]]] = {}

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._help[name] = (kind, help_text)
        self._values.setdefault(name, {})

    def describe_histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self._help[name] = ("histogram", help_text)
        self._buckets[name] = tuple(sorted(buckets))
        self._histograms.setdefault(name, {})

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        series = self._values[name]
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[name][tuple(sorted(labels.items()))] = value

    def clear(self, name: str) -> None:
        """Drop every series of a counter or gauge (e.g. of objects that are gone)."""
        self._values[name].clear()

    def observe(self, name: str, value: float, **labels: str) -> None:
        bounds = self._buckets[name]
        series = self._histograms[name]
        key = tuple(sorted(labels.items()))
        counts, total = series.get(key) or series.setdefault(key, ([0] * (len(bounds) + 1), [0.0]))
        counts[bisect.bisect_left(bounds, value)] += 1
        total[0] += value

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text) in self._help.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                lines.extend(self._render_histogram(name))
                continue
            for labels, value in self._values.get(name, {}).items():
                lines.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"

    def _render_histogram(self, name: str) -> list[str]:
        lines: list[str] = []
        bounds = self._buckets[name]
        for labels, (counts, total) in self._histograms[name].items():
            cumulative = 0
            for bound, count in zip((*bounds, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {cumulative}")
            lines.append(f"{name}_sum{_labels(labels)} {total[0]:g}")
            lines.append(f"{name}_count{_labels(labels)} {cumulative}")
        return lines


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
