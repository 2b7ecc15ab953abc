"""Pure parts of pipeline tracing: W3C traceparent parse/format and the entry field encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hda.runtime.config import TracingConfig
from hda.runtime.tracing import (
    PipelineTracer,
    TraceParent,
    decode_contexts,
    encode_contexts,
    format_traceparent,
    parse_traceparent,
)

W3C_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_reads_the_w3c_example() -> None:
    context = parse_traceparent(W3C_EXAMPLE)
    assert context == TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 0x01)
    assert context.sampled


def test_unsampled_flag_is_read() -> None:
    assert not parse_traceparent(W3C_EXAMPLE[:-2] + "00").sampled


def test_a_future_version_may_carry_more_fields() -> None:
    context = parse_traceparent("cc" + W3C_EXAMPLE[2:] + "-what-the-future-holds")
    assert context.span_id == 0x00F067AA0BA902B7


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "expected VERSION-TRACEID"),
        (W3C_EXAMPLE.upper(), "lowercase hex"),
        ("ff" + W3C_EXAMPLE[2:], "version ff is invalid"),
        (W3C_EXAMPLE + "-extra", "version 00 has exactly four fields"),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "the trace id is all zeros"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", "the parent id is all zeros"),
    ],
)
def test_a_bad_traceparent_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_traceparent(text)
    assert repr(text) in str(caught.value)


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    flags=st.integers(0, 255),
)
def test_format_then_parse_is_the_identity(trace_id: int, span_id: int, flags: int) -> None:
    context = TraceParent(trace_id, span_id, flags)
    assert parse_traceparent(format_traceparent(context)) == context


def test_entry_field_round_trips_several_contexts_with_and_without_tracestate() -> None:
    contexts = [
        TraceParent(1, 2, 1, "vendor=a b,other=c"),  # a space is legal inside tracestate
        TraceParent(3, 4, 1),
    ]
    value = encode_contexts(contexts)
    assert value == (
        b"00-00000000000000000000000000000001-0000000000000002-01\tvendor=a b,other=c\n"
        b"00-00000000000000000000000000000003-0000000000000004-01"
    )
    assert decode_contexts(value) == contexts


def test_a_malformed_line_in_the_entry_field_is_skipped_not_fatal() -> None:
    good = TraceParent(3, 4, 1)
    assert decode_contexts(b"garbage\n" + encode_contexts([good])) == [good]


def test_tracing_off_sets_up_no_provider_and_traces_nothing() -> None:
    tracer = PipelineTracer(None, "hda-worker", "w-0")
    assert tracer.provider is None
    assert tracer.current_context() is None
    traced = {b"tc": encode_contexts([TraceParent(3, 4, 1)])}
    with tracer.batch_span("hda.worker.batch", [traced]) as trace:
        assert trace == b""


def test_traces_url_appends_the_otlp_path_to_the_base() -> None:
    config = TracingConfig(endpoint="http://collector:4318/", sample_ratio=0.5)
    assert config.traces_url == "http://collector:4318/v1/traces"
