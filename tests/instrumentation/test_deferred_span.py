"""`SendSpanStarter`: the send span built at the ack is the span the SDK would have exported."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from kafka import KafkaProducer
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import DEFAULT_OFF, TraceIdRatioBased
from opentelemetry.trace import StatusCode, TraceFlags

from choreoscope.instrumentation import _deferred_span
from choreoscope.instrumentation._deferred_span import (
    DeferredSpan,
    SendSpanStarter,
    SpanEnder,
)
from choreoscope.instrumentation._fastspan import SpanStarter
from choreoscope.instrumentation.producer import instrument_producer
from choreoscope.instrumentation.traceparent import TraceParent, remote_context
from tests.instrumentation.test_fastspan import provider

ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "kafka",
    "messaging.operation.type": "send",
    "messaging.destination.name": "orders",
    "messaging.message.id": "0190a0a0-0000-7000-8000-000000000001",
}
STATE = "vendor=abc,other=1"
PARENT = remote_context(
    TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1), STATE
)


class Clock:
    """A predictable `time_ns` for both paths: 1000, 2000, 3000, ..."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def exported(span: ReadableSpan) -> tuple[Any, ...]:
    """Everything about a finished span but its span id."""
    return (
        span.name,
        span.kind,
        span.context.trace_id,
        span.context.trace_flags,
        span.context.trace_state.to_header(),
        span.parent.span_id if span.parent else None,
        span.parent.is_remote if span.parent else None,
        dict(span.attributes or {}),
        span.status.status_code,
        span.status.description,
        [(e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
         for e in span.events],
        span.start_time,
        span.end_time,
        span.resource.attributes,
        span.instrumentation_scope,
    )


def both_ways(parent: Context | None, outcome: Any, monkeypatch: pytest.MonkeyPatch,
              **kwargs: Any) -> tuple[ReadableSpan, ReadableSpan]:
    """The same send span deferred, and started at the send by the SDK, on the same clock."""
    spans = []
    for defer in (True, False):
        clock = Clock()
        monkeypatch.setattr(_deferred_span, "time_ns", clock)
        monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", clock)
        monkeypatch.setattr("opentelemetry.sdk.util.time_ns", clock, raising=False)
        tp, exporter = provider(**kwargs)
        starter = SpanStarter(tp.get_tracer("test"))
        if not defer:
            monkeypatch.setattr(_deferred_span, "_SDK_READY", False)
        pending = SendSpanStarter(starter)("send orders", parent, ATTRIBUTES)
        assert isinstance(pending, DeferredSpan if defer else SpanEnder)
        assert exporter.get_finished_spans() == ()  # nothing ends before the outcome
        pending(outcome)
        [span] = exporter.get_finished_spans()
        assert span.context == pending.get_span_context()
        spans.append(span)
        monkeypatch.undo()
    return spans[0], spans[1]


@pytest.mark.parametrize("parent", [None, PARENT], ids=["root", "remote-parent"])
def test_a_delivered_send_exports_the_same_span(parent: Context | None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    deferred, started = both_ways(parent, object(), monkeypatch)
    skip = 3 if parent is None else 2  # a root span's trace id is new each time
    assert exported(deferred)[skip:] == exported(started)[skip:]
    assert deferred.start_time == 1000 and deferred.end_time == 2000
    assert deferred.status.status_code is StatusCode.UNSET
    if parent is not None:
        assert deferred.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert deferred.parent is not None and deferred.parent.span_id == 0xB7AD6B7169203331
        assert deferred.context.trace_state.to_header() == STATE


def test_a_failed_send_exports_the_same_error_span(monkeypatch: pytest.MonkeyPatch) -> None:
    error = TimeoutError("no ack within 30 s")
    deferred, started = both_ways(PARENT, error, monkeypatch)
    assert exported(deferred) == exported(started)
    assert deferred.status.status_code is StatusCode.ERROR
    assert deferred.status.description == "TimeoutError: no ack within 30 s"
    assert dict(deferred.attributes or {})["error.type"] == "TimeoutError"
    assert [e.name for e in deferred.events] == ["exception"]


def test_the_root_flags_are_the_sdks() -> None:
    """Sampled, and the random-trace-id flag where the SDK's id generator says so."""
    tp, _ = provider()
    tracer = tp.get_tracer("test")
    pending = SendSpanStarter(SpanStarter(tracer))("send orders", None, ATTRIBUTES)
    flags = TraceFlags.SAMPLED
    if tracer.id_generator.is_trace_id_random():  # type: ignore[attr-defined]
        flags |= TraceFlags.RANDOM_TRACE_ID
    assert pending.get_span_context().trace_flags == flags
    assert tracer.start_span("x").get_span_context().trace_flags == flags


def test_a_dropping_sampler_sends_a_context_and_exports_nothing() -> None:
    tp, exporter = provider(sampler=DEFAULT_OFF)
    pending = SendSpanStarter(SpanStarter(tp.get_tracer("test")))("send orders", None,
                              ATTRIBUTES)
    context = pending.get_span_context()
    assert context.is_valid and not context.trace_flags.sampled
    pending(None)
    assert exporter.get_finished_spans() == ()


class StartWatcher(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append(span.name)


@pytest.mark.parametrize("case", ["watching processor", "ratio sampler", "sdk internals missing"])
def test_spans_start_at_the_send_where_the_difference_would_show(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A processor watching span starts sees the span at the send; a sampler reading
    attributes is given them; an SDK without what we read is used through its API."""
    tp, exporter = provider(sampler=TraceIdRatioBased(1.0)) if case == "ratio sampler" \
        else provider()
    watcher = StartWatcher()
    if case == "watching processor":
        tp.add_span_processor(watcher)
    if case == "sdk internals missing":
        monkeypatch.setattr(_deferred_span, "_TRACER_NEEDS", ("_no_such_attribute",))
    pending = SendSpanStarter(SpanStarter(tp.get_tracer("test")))("send orders", None,
                              ATTRIBUTES)
    assert isinstance(pending, SpanEnder)
    if case == "watching processor":
        assert watcher.started == ["send orders"]
    pending(None)
    [span] = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == ATTRIBUTES


def test_a_record_in_flight_holds_no_sdk_span() -> None:
    """What waits for the ack: the deferred span, its context and its attributes."""
    tp, _ = provider()
    pending = SendSpanStarter(SpanStarter(tp.get_tracer("test")))("send orders", None,
                              dict(ATTRIBUTES))
    held = [r for r in gc.get_referents(pending) if gc.is_tracked(r)]
    names = sorted(type(r).__name__ for r in held)
    assert "_Span" not in names and "BoundedAttributes" not in names
    assert isinstance(pending, DeferredSpan)


def test_a_deferred_span_finished_twice_is_exported_once() -> None:
    tp, exporter = provider()
    pending = SendSpanStarter(SpanStarter(tp.get_tracer("test")))("send orders", None,
                              ATTRIBUTES)
    pending(None)
    pending(TimeoutError("late errback"))
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET


def test_a_record_in_flight_keeps_only_the_parents_span_context() -> None:
    """The caller's Context (and the parent span it holds) is not kept until the ack."""
    import weakref

    from opentelemetry import trace

    tp, exporter = provider()
    tracer = tp.get_tracer("test")
    parent_span = tracer.start_span("handle order")
    parent_span.set_attribute("big", "x" * 100_000)
    parent = trace.set_span_in_context(parent_span)
    pending = SendSpanStarter(SpanStarter(tracer))("send orders", parent, ATTRIBUTES)
    parent_span.end()
    gone = weakref.ref(parent_span)
    del parent_span, parent
    gc.collect()
    assert gone() is None
    pending(None)
    sent = [s for s in exporter.get_finished_spans() if s.name == "send orders"]
    assert [s.parent.span_id if s.parent else None for s in sent] == [
        next(s for s in exporter.get_finished_spans() if s.name == "handle order").context.span_id]


class FailingAtStart(SpanProcessor):
    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        raise RuntimeError("processor broken")


def test_a_processor_added_in_flight_that_fails_at_start_does_not_cost_the_span(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its traceparent already went out: the span is still exported, the failure logged."""
    monkeypatch.setattr(_deferred_span, "_failures_logged", set())
    tp, exporter = provider()
    pending = SendSpanStarter(SpanStarter(tp.get_tracer("test")))("send orders", None,
                              ATTRIBUTES)
    assert isinstance(pending, DeferredSpan)
    tp.add_span_processor(FailingAtStart())
    with caplog.at_level("ERROR", logger="choreoscope.instrumentation"):
        pending(None)
    [span] = exporter.get_finished_spans()
    assert span.context == pending.get_span_context()
    assert dict(span.attributes or {}) == ATTRIBUTES
    assert [r.getMessage() for r in caplog.records] == [
        "choreoscope: a span processor failed at the producer span's start "
        "(logged once; later ones at debug level)"]


@pytest.mark.broker
def test_a_producer_exports_the_deferred_span_of_each_send(bootstrap: str, topic: str) -> None:
    """Through the real broker: the span in `traceparent` is the span exported, once."""
    from kafka import KafkaConsumer

    tp, exporter = provider()
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    producer = instrument_producer(raw, service="orders", tracer_provider=tp)
    events = [producer.publish(topic, "order.placed", {"n": n}, key="ord_1") for n in range(3)]
    producer.flush()
    raw.close(timeout=5)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"send {topic}"] * 3
    sent = {f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}"
            for s in spans}
    assert sent == {e.traceparent for e in events}
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    on_the_bus = {dict(r.headers)["traceparent"].decode() for r in consumer}
    consumer.close()
    assert on_the_bus == sent
    assert all((s.start_time or 0) < (s.end_time or 0) for s in spans)
