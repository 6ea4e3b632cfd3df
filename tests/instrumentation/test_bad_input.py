"""Bad input on the embedded broker never crashes the consumer loop and never loses a record.

Every record reaches the handler as an Event with what could be read, a fresh root trace when
the trace context is unusable, and its problems on the event and on the span.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreoscope.instrumentation import Event, traced_consumer
from choreoscope.instrumentation import decoder as decoder_module
from tests.instrumentation._bus import PARENT_SPAN_ID, TRACE_ID, TRACEPARENT, round_trip

pytestmark = pytest.mark.broker

GOOD = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_type", b"order.placed"),
    ("ce_source", b"shop"),
    ("ce_time", b"2026-01-01T10:00:00Z"),
    ("ce_schemaversion", b"1"),
    ("ce_subject", b"ord_1"),
]
TRACE = TRACEPARENT[3:35]
SPAN = TRACEPARENT[36:52]

# name -> (headers, value, expected problems, whether the producer's trace is continued)
CASES: dict[str, tuple[Any, bytes | None, list[str], bool]] = {
    "undecodable header bytes": (
        [*GOOD[:6], ("ce_subject", b"ord\xff"), ("traceparent", TRACEPARENT.encode())],
        b"{}",
        ["bad_header: ce_subject is not valid UTF-8"],
        True,
    ),
    "traceparent uppercase hex": (
        [*GOOD, ("traceparent", TRACEPARENT.upper().encode())],
        b"{}",
        ["bad_traceparent: uppercase hex is not allowed"],
        False,
    ),
    "traceparent version ff": (
        [*GOOD, ("traceparent", f"ff-{TRACE}-{SPAN}-01".encode())],
        b"{}",
        ["bad_traceparent: version ff is invalid"],
        False,
    ),
    "traceparent version 00 too long": (
        [*GOOD, ("traceparent", f"{TRACEPARENT}-x".encode())],
        b"{}",
        ["bad_traceparent: version 00 must be exactly 55 characters"],
        False,
    ),
    "traceparent zero trace id": (
        [*GOOD, ("traceparent", f"00-{'0' * 32}-{SPAN}-01".encode())],
        b"{}",
        ["bad_traceparent: trace id is all zeros"],
        False,
    ),
    "traceparent zero parent id": (
        [*GOOD, ("traceparent", f"00-{TRACE}-{'0' * 16}-01".encode())],
        b"{}",
        ["bad_traceparent: parent id is all zeros"],
        False,
    ),
    "traceparent garbage bytes": (
        [*GOOD, ("traceparent", b"\xff\xfe")],
        b"{}",
        [
            "bad_header: traceparent is not valid UTF-8",
            "bad_traceparent: expected 4 dash-separated fields, got 1",
        ],
        False,
    ),
    "bad tracestate keeps the parent": (
        [*GOOD, ("traceparent", TRACEPARENT.encode()), ("tracestate", b"a=1\x7f")],
        b"{}",
        ["bad_tracestate: the value of 'a' is not a tracestate value"],
        True,
    ),
    "non-JSON value": (
        [*GOOD, ("traceparent", TRACEPARENT.encode())],
        b"\x00\x01not json",
        ["undecodable_value: not JSON"],
        True,
    ),
    "missing headers": (
        None,
        b'{"order": 1}',
        ["no_envelope: no ce_* headers and no JSON envelope in the value"],
        False,
    ),
    "missing headers, non-JSON value": (
        None,
        b"\xff\xfe",
        [
            "no_envelope: no ce_* headers and no JSON envelope in the value",
            "undecodable_value: not JSON",
        ],
        False,
    ),
    "tombstone with headers": (
        [*GOOD, ("traceparent", TRACEPARENT.encode())],
        None,
        [],
        True,
    ),
    "tombstone without headers": (
        None,
        None,
        ["no_envelope: no ce_* headers and no JSON envelope in the value"],
        False,
    ),
    "envelope fields missing": (
        [("ce_specversion", b"0.3"), ("ce_type", b"order.place")],
        b"{}",
        [
            "bad_specversion: '0.3'",
            "missing_id",
            "missing_source",
            "missing_time",
            "missing_schema_version",
            "type_not_past_tense: order.place",
        ],
        False,
    ),
}


def test_consumer_loop_survives_every_bad_record(
    bootstrap: str,
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A loop over all bad records hands every one to the handler, in order, none lost."""
    names = list(CASES)
    records = round_trip(bootstrap, topic, [(CASES[n][1], CASES[n][0]) for n in names], key=b"k")
    handled: list[Event] = []

    @traced_consumer(service="billing", group="g", tracer_provider=tracer_provider)
    def handle(event: Event) -> int:
        handled.append(event)
        return len(handled)

    results = [handle(record) for record in records]
    assert results == list(range(1, len(names) + 1))
    assert [e.offset for e in handled] == [r.offset for r in records]
    spans = span_exporter.get_finished_spans()
    assert len(spans) == len(names)
    for name, event, span in zip(names, handled, spans, strict=True):
        _, value, problems, continued = CASES[name]
        assert event.problems == problems, name
        attributes = dict(span.attributes or {})
        if problems:
            assert attributes["choreoscope.envelope.problems"] == tuple(problems), name
        else:
            assert "choreoscope.envelope.problems" not in attributes, name
        assert span.kind is SpanKind.CONSUMER and span.name == f"process {topic}"
        if continued:
            assert span.context.trace_id == TRACE_ID, name
            assert span.parent is not None and span.parent.span_id == PARENT_SPAN_ID, name
        else:
            assert span.parent is None, name  # a fresh root trace
            assert span.context.trace_id != TRACE_ID, name
        if value is None:
            assert event.data is None, name


def test_kept_fields_of_a_damaged_record(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """A record with one bad header keeps every other field, the damaged one with its bad
    bytes escaped (`\\xff`): two ids differing only in bad bytes stay two ids."""
    headers, value, _, _ = CASES["undecodable header bytes"]
    (record,) = round_trip(bootstrap, topic, [(value, headers)])
    got: list[Event] = []
    traced_consumer(service="s", tracer_provider=tracer_provider)(got.append)(record)
    (event,) = got
    assert (event.id, event.type, event.source, event.subject) == (
        "e-1",
        "order.placed",
        "shop",
        "ord\\xff",
    )
    assert (event.traceparent, event.data) == (TRACEPARENT, {})


def test_bad_traceparent_is_root_with_link_to_ambient(
    bootstrap: str,
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """With an unusable traceparent the span starts a new trace, not a child of the ambient span."""
    headers, value, _, _ = CASES["traceparent version ff"]
    (record,) = round_trip(bootstrap, topic, [(value, headers)])
    handle = traced_consumer(service="s", tracer_provider=tracer_provider)(lambda event: None)
    with tracer_provider.get_tracer("loop").start_as_current_span("poll") as ambient:
        handle(record)
    process = next(s for s in span_exporter.get_finished_spans() if s.name != "poll")
    ambient_context = ambient.get_span_context()
    assert process.parent is None
    assert process.context.trace_id not in (ambient_context.trace_id, TRACE_ID)
    assert [link.context.span_id for link in process.links] == [ambient_context.span_id]


def test_handler_error_on_bad_record_propagates(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """Only the handler's own exception leaves the wrapper, even for a bad record."""
    headers, value, _, _ = CASES["missing headers, non-JSON value"]
    (record,) = round_trip(bootstrap, topic, [(value, headers)])
    error = RuntimeError("handler")

    @traced_consumer(service="s", tracer_provider=tracer_provider)
    def handle(event: Event) -> None:
        raise error

    with pytest.raises(RuntimeError) as info:
        handle(record)
    assert info.value is error


def test_decoder_failure_still_delivers(
    bootstrap: str,
    topic: str,
    tracer_provider: TracerProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a bug inside the decoder delivers the record, raw, with the failure as a problem."""
    (record,) = round_trip(bootstrap, topic, [(b"raw bytes", None)])

    def broken(*args: Any) -> Event:
        raise LookupError("decoder bug")

    monkeypatch.setattr(decoder_module, "_decode", broken)
    got: list[Event] = []
    traced_consumer(service="s", tracer_provider=tracer_provider)(got.append)(record)
    (event,) = got
    assert (event.data, event.envelope, event.offset) == ("raw bytes", "unknown", 0)
    assert event.problems == ["undecodable_value: LookupError: decoder bug"]


class _Exploding(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("processor start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "end":
            raise RuntimeError("processor end")


@pytest.mark.parametrize("where", ["start", "end"])
def test_broken_telemetry_never_stops_the_handler(
    bootstrap: str, topic: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A span processor that raises is logged; the handler still runs and returns its value."""
    (record,) = round_trip(bootstrap, topic, [(b"{}", GOOD)])
    provider = TracerProvider()
    provider.add_span_processor(_Exploding(where))
    handle = traced_consumer(service="s", tracer_provider=provider)(lambda event: event.id)
    with caplog.at_level(logging.ERROR, logger="choreoscope.instrumentation.consumer"):
        assert handle(record) == "e-1"
    assert any("choreoscope" in r.getMessage() for r in caplog.records)
