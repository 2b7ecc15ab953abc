"""Pipeline steps, compiled from the API model, over plain events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hda.api.v1alpha1 import PipelineStep
from hda.runtime.pipeline import Pipeline, sample_keeps


def pipeline(*steps: dict[str, Any]) -> Pipeline:
    return Pipeline([PipelineStep.model_validate(step) for step in steps])


def run(p: Pipeline, *events: dict[str, Any], entry_ms: int = 0) -> list[dict[str, Any]]:
    result = p.run([orjson.dumps(e) for e in events], entry_ms)
    assert not result.failures
    return [orjson.loads(line) for line in result.lines]


def test_no_steps_passes_lines_through_untouched() -> None:
    lines = [b'{"a": 1}', b'{"b":2}']
    p = pipeline()
    assert p.is_passthrough
    assert p.run(lines, 0).lines is lines


def test_parse_json_in_place_and_into_a_target() -> None:
    assert run(pipeline({"parseJson": {"field": "m"}}), {"m": '{"x":1}'}) == [{"m": {"x": 1}}]
    assert run(pipeline({"parseJson": {"field": "m", "target": "p.q"}}), {"m": "[1]"}) == [
        {"m": "[1]", "p": {"q": [1]}}
    ]
    assert run(pipeline({"parseJson": {"field": "m"}}), {"other": 1}) == [{"other": 1}]


def test_parse_json_failure_is_reported_per_event() -> None:
    p = pipeline({"parseJson": {"field": "m"}})
    result = p.run([b'{"m":"{}"}', b'{"m":"{bad"}', b'{"m":5}'], 0)
    assert [orjson.loads(line) for line in result.lines] == [{"m": {}}]
    assert [(f.index, f.line) for f in result.failures] == [(1, b'{"m":"{bad"}'), (2, b'{"m":5}')]
    assert "not JSON" in result.failures[0].error
    assert "not a string" in result.failures[1].error


@pytest.mark.parametrize(
    ("op", "operand", "kept"),
    [
        ("eq", {"value": "3"}, [3, "3"]),
        ("eq", {"value": "true"}, [True]),
        ("ne", {"value": "3"}, [1, 5.5, "x", True, None]),
        ("gt", {"value": "2"}, [3, "3", 5.5, "x"]),  # numbers numerically, strings as strings
        ("gte", {"value": "3"}, [3, "3", 5.5, "x"]),
        ("lt", {"value": "3"}, [1]),
        ("lte", {"value": "3"}, [1, 3, "3"]),
        ("in", {"values": ["1", "x"]}, [1, "x"]),
        ("notIn", {"values": ["1", "x"]}, [3, "3", 5.5, True, None]),
        ("exists", {}, [1, 3, "3", 5.5, "x", True]),
        ("notExists", {}, [None]),
        ("matches", {"value": "^x"}, ["x"]),
    ],
)
def test_filter_operators(op: str, operand: dict[str, Any], kept: list[Any]) -> None:
    events: list[dict[str, Any]] = [
        {"v": 1},
        {"v": 3},
        {"v": "3"},
        {"v": 5.5},
        {"v": "x"},
        {"v": True},
        {},
    ]
    p = pipeline({"filter": {"field": "v", "op": op, **operand}})
    assert [e.get("v") for e in run(p, *events)] == kept


def test_set_rename_drop_and_redact_nested_fields() -> None:
    p = pipeline(
        {"setFields": {"fields": {"meta.env": "prod", "n": [1]}}},
        {"renameFields": {"fields": {"msg": "log.message", "missing": "nowhere"}}},
        {"dropFields": {"fields": ["secret", "a.b"]}},
        {"redact": {"fields": ["log.message"], "pattern": r"\d{3}-\d{4}"}},
    )
    out = run(p, {"msg": "call 555-1234 now", "secret": 1, "a": {"b": 1, "c": 2}})
    assert out == [
        {
            "meta": {"env": "prod"},
            "n": [1],
            "log": {"message": "call [REDACTED] now"},
            "a": {"c": 2},
        }
    ]
    # set values are copies: mutating one event's value cannot leak into the next
    first, second = run(p, {"msg": "a"}, {"msg": "b"})
    assert first["n"] is not second["n"]


def test_sample_by_key_keeps_or_drops_a_key_consistently() -> None:
    p = pipeline({"sample": {"rate": 0.5, "key": "user"}})
    events = [{"user": f"u{i % 10}", "i": i} for i in range(100)]
    kept = run(p, *events)
    kept_users = {e["user"] for e in kept}
    assert kept == [e for e in events if e["user"] in kept_users]
    assert kept_users == {f"u{i}" for i in range(10) if sample_keeps(f"u{i}", 0.5)}
    assert len(run(pipeline({"sample": {"rate": 1}}), *events)) == 100


def test_count_by_key_counts_per_window_of_the_entry_time() -> None:
    p = pipeline(
        {"filter": {"field": "level", "op": "ne", "value": "debug"}},
        {"countByKey": {"key": "host", "window": "10s"}},
        {"setFields": {"fields": {"kind": "count"}}},
    )
    events = [{"host": "a"}, {"host": "b"}, {"host": "a"}, {"host": "a", "level": "debug"}, {}]
    out = run(p, *events, entry_ms=1_700_000_012_345)
    window = {"windowStart": 1_700_000_010_000, "windowEnd": 1_700_000_020_000, "kind": "count"}
    assert out == [
        {**window, "key": "a", "count": 2},
        {**window, "key": "b", "count": 1},
        {**window, "key": None, "count": 1},
    ]
