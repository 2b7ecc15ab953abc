"""Pipeline steps compiled from the API model into plain functions over one entry's events.

Pure: no I/O, no clocks. `countByKey` windows are keyed by the input entry's ID time (the moment
ingest accepted the batch), so reprocessing an entry after a crash gives the same counts, and each
entry contributes one partial count per (window, key) that downstream sums: exactly once, without
worker state that a SIGKILL could lose.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from hda.api.v1alpha1 import FilterStep, PipelineStep, parse_duration

from .codec import key_bytes, lookup

Event = dict[str, Any]
EventStep = Callable[[Event], Event | None]  # None drops the event
AggregateStep = Callable[[list[Event], int], list[Event]]  # (events, entry time ms) -> events


class StepError(Exception):
    """An event that a step cannot process; the message ends up in the dead-letter entry."""


@dataclass(frozen=True)
class EventFailure:
    index: int
    line: bytes
    error: str


@dataclass(frozen=True)
class EntryResult:
    lines: list[bytes]
    failures: list[EventFailure]


def _set_path(event: Event, path: str, value: Any) -> None:
    if "." not in path:
        event[path] = value
        return
    parts = path.split(".")
    node = event
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


_MISSING = object()


def _pop_path(event: Event, path: str) -> Any:
    if "." not in path:
        return event.pop(path, _MISSING)
    parts = path.split(".")
    node: Any = event
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return _MISSING
    return node.pop(parts[-1], _MISSING) if isinstance(node, dict) else _MISSING


def _parse_json(field: str, target: str | None) -> EventStep:
    def step(event: Event) -> Event:
        value = lookup(event, field)
        if value is None:
            return event
        if not isinstance(value, str):
            raise StepError(f"parseJson: field {field!r} is {type(value).__name__}, not a string")
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as error:
            raise StepError(f"parseJson: field {field!r} is not JSON: {error}") from None
        _set_path(event, target or field, parsed)
        return event

    return step


@dataclass(frozen=True)
class Operand:
    """A filter operand as written in the spec (a string), with its numeric reading if any:
    numbers compare numerically when both sides are numbers, strings compare as strings."""

    text: str
    number: float | None

    @classmethod
    def of(cls, text: str) -> Operand:
        try:
            number: float | None = float(text)
        except ValueError:
            number = None
        return cls(text, number)

    def key(self, actual: Any) -> tuple[Any, Any] | None:
        """(actual, operand) in one comparable domain, or None when they cannot compare."""
        if isinstance(actual, bool):
            return ("true" if actual else "false"), self.text
        if isinstance(actual, int | float):
            return (actual, self.number) if self.number is not None else None
        if isinstance(actual, str):
            return actual, self.text
        return None

    def equals(self, actual: Any) -> bool:
        pair = self.key(actual)
        return pair is not None and pair[0] == pair[1]


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: bool(a > b),
    "gte": lambda a, b: bool(a >= b),
    "lt": lambda a, b: bool(a < b),
    "lte": lambda a, b: bool(a <= b),
}


def filter_predicate(spec: FilterStep) -> Callable[[Event], bool]:
    field, op = spec.field, spec.op
    if op == "exists":
        return lambda event: lookup(event, field) is not None
    if op == "notExists":
        return lambda event: lookup(event, field) is None
    if op in ("in", "notIn"):
        operands = [Operand.of(v) for v in spec.values or []]
        if op == "in":
            return lambda event: any(o.equals(lookup(event, field)) for o in operands)
        return lambda event: not any(o.equals(lookup(event, field)) for o in operands)
    operand = Operand.of(spec.value or "")
    if op == "eq":
        return lambda event: operand.equals(lookup(event, field))
    if op == "ne":
        return lambda event: not operand.equals(lookup(event, field))
    if op == "matches":
        pattern = re.compile(operand.text)
        return lambda event: isinstance(v := lookup(event, field), str) and bool(pattern.search(v))
    ordering = _ORDERINGS[op]

    def ordered(event: Event) -> bool:
        actual = lookup(event, field)
        if isinstance(actual, bool):
            return False  # booleans have no order
        pair = operand.key(actual)
        return pair is not None and ordering(pair[0], pair[1])

    return ordered


def _filter(spec: FilterStep) -> EventStep:
    predicate = filter_predicate(spec)
    return lambda event: event if predicate(event) else None


def _set_fields(fields: dict[str, Any]) -> EventStep:
    if all(isinstance(v, str | int | float | bool) or v is None for v in fields.values()):
        items = list(fields.items())  # immutable values can be shared between events

        def set_scalars(event: Event) -> Event:
            for path, value in items:
                _set_path(event, path, value)
            return event

        return set_scalars
    frozen = orjson.dumps(fields)  # copy per event so events never share mutable values

    def set_copies(event: Event) -> Event:
        for path, value in orjson.loads(frozen).items():
            _set_path(event, path, value)
        return event

    return set_copies


def _rename_fields(fields: dict[str, str]) -> EventStep:
    def step(event: Event) -> Event:
        for old, new in fields.items():
            value = _pop_path(event, old)
            if value is not _MISSING:
                _set_path(event, new, value)
        return event

    return step


def _drop_fields(fields: list[str]) -> EventStep:
    def step(event: Event) -> Event:
        for path in fields:
            _pop_path(event, path)
        return event

    return step


def _redact(fields: list[str], pattern: str, replacement: str) -> EventStep:
    regex = re.compile(pattern)

    def step(event: Event) -> Event:
        for path in fields:
            value = lookup(event, path)
            if isinstance(value, str):
                _set_path(event, path, regex.sub(replacement, value))
        return event

    return step


def sample_keeps(key_value: Any, rate: float) -> bool:
    """Deterministic by key: every event of a key is kept, or none is."""
    return zlib.crc32(key_bytes(key_value)) < rate * 2**32


def _sample(rate: float, key: str | None) -> EventStep:
    if key is None:
        return lambda event: event if random.random() < rate else None  # noqa: S311 (sampling)
    return lambda event: event if sample_keeps(lookup(event, key), rate) else None


def _count_by_key(key: str, window: str) -> AggregateStep:
    window_ms = max(1, int(parse_duration(window) * 1000))

    def aggregate(events: list[Event], entry_time_ms: int) -> list[Event]:
        window_start = entry_time_ms - entry_time_ms % window_ms
        counts: dict[bytes, tuple[Any, int]] = {}
        for event in events:
            value = lookup(event, key)
            identity = type(value).__name__.encode() + b":" + key_bytes(value)
            previous = counts.get(identity)
            counts[identity] = (value, 1 if previous is None else previous[1] + 1)
        return [
            {
                "windowStart": window_start,
                "windowEnd": window_start + window_ms,
                "key": value,
                "count": count,
            }
            for value, count in counts.values()
        ]

    return aggregate


def compile_step(step: PipelineStep) -> EventStep | AggregateStep:
    if step.parse_json is not None:
        return _parse_json(step.parse_json.field, step.parse_json.target)
    if step.filter is not None:
        return _filter(step.filter)
    if step.set_fields is not None:
        return _set_fields(dict(step.set_fields.fields))
    if step.rename_fields is not None:
        return _rename_fields(dict(step.rename_fields.fields))
    if step.drop_fields is not None:
        return _drop_fields(list(step.drop_fields.fields))
    if step.redact is not None:
        return _redact(step.redact.fields, step.redact.pattern, step.redact.replacement)
    if step.sample is not None:
        return _sample(step.sample.rate, step.sample.key)
    if step.count_by_key is not None:
        return _count_by_key(step.count_by_key.key, step.count_by_key.window)
    raise ValueError(f"unsupported pipeline step {step.kind}")


class Pipeline:
    """The compiled steps; `run` processes one input entry's lines."""

    def __init__(self, steps: tuple[PipelineStep, ...] | list[PipelineStep]) -> None:
        # Runs of per-event steps separated by aggregates: [(event_steps, aggregate | None), ...]
        self._stages: list[tuple[list[EventStep], AggregateStep | None]] = []
        current: list[EventStep] = []
        for step in steps:
            compiled = compile_step(step)
            if step.count_by_key is not None:
                self._stages.append((current, compiled))  # type: ignore[arg-type]
                current = []
            else:
                current.append(compiled)  # type: ignore[arg-type]
        self._stages.append((current, None))
        self.is_passthrough = not steps

    def run(self, lines: list[bytes], entry_time_ms: int) -> EntryResult:
        if self.is_passthrough:
            return EntryResult(lines=lines, failures=[])
        dumps = orjson.dumps
        failures: list[EventFailure] = []
        events: list[Event] = []
        origin: list[int] = []  # event -> index in `lines`, for error reports (-1: aggregate)
        for index, line in enumerate(lines):
            try:
                events.append(orjson.loads(line))
                origin.append(index)
            except orjson.JSONDecodeError as error:
                failures.append(EventFailure(index, line, f"invalid JSON: {error}"))
        for event_steps, aggregate in self._stages:
            survivors: list[Event] = []
            survivor_origin: list[int] = []
            for event, source_index in zip(events, origin, strict=True):
                try:
                    result: Event | None = event
                    for event_step in event_steps:
                        result = event_step(result)  # type: ignore[arg-type]
                        if result is None:
                            break
                except Exception as error:  # a step bug must not crash-loop the worker either
                    message = (
                        str(error)
                        if isinstance(error, StepError)
                        else f"{type(error).__name__}: {error}"
                    )
                    line = lines[source_index] if source_index >= 0 else dumps(event)
                    failures.append(EventFailure(source_index, line, message))
                    continue
                if result is not None:
                    survivors.append(result)
                    survivor_origin.append(source_index)
            events, origin = survivors, survivor_origin
            if aggregate is not None:
                events = aggregate(events, entry_time_ms)
                origin = [-1] * len(events)
        return EntryResult(lines=[dumps(event) for event in events], failures=failures)
