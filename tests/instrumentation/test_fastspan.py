"""`SpanStarter`: the same exported spans as the public path, which it falls back to when needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from kafka import KafkaProducer
from opentelemetry import attributes as otel_attributes
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind

from choreoscope.instrumentation._fastspan import SpanStarter
from choreoscope.instrumentation.producer import instrument_producer
from choreoscope.instrumentation.traceparent import TraceParent, remote_context

ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "kafka",
    "messaging.destination.name": "orders",
    "messaging.message.id": "0190a0a0-0000-7000-8000-000000000001",
    "messaging.kafka.offset": 42,
    "choreoscope.out_of_order": True,
    "cloudevents.event_type": "order.placed",
}
PARENT = remote_context(TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1))


def provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(**kwargs)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def shape(span: ReadableSpan) -> tuple[Any, ...]:
    """Everything about a finished span except its ids and times."""
    return (
        span.name,
        span.kind,
        span.parent.span_id if span.parent else None,
        dict(span.attributes or {}),
        span.dropped_attributes,
        [(link.context.span_id, dict(link.attributes or {})) for link in span.links],
        span.status.status_code,
        [(e.name, dict(e.attributes or {})) for e in span.events],
    )


def both_ways(tp: TracerProvider, exporter: InMemorySpanExporter, **kwargs: Any) -> SpanStarter:
    """One span through `SpanStarter`, one through `start_span`; both exported the same."""
    tracer = tp.get_tracer("test")
    links = [Link(trace.get_current_span(PARENT).get_span_context())]
    starter = SpanStarter(tracer)
    starter("process orders", PARENT, SpanKind.CONSUMER, ATTRIBUTES, links).end()
    tracer.start_span(
        "process orders", PARENT, SpanKind.CONSUMER, ATTRIBUTES, links, **kwargs
    ).end()
    fast, public = exporter.get_finished_spans()
    assert shape(fast) == shape(public)
    return starter


def test_default_sdk_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's defaults the attributes skip the per-value cleaning and export the same."""
    cleaned: list[Any] = []
    clean = otel_attributes._clean_attribute_value

    def spy(value: Any, limit: Any) -> Any:
        cleaned.append(value)
        return clean(value, limit)

    tp, exporter = provider()
    tracer = tp.get_tracer("test")
    starter = SpanStarter(tracer)
    monkeypatch.setattr(otel_attributes, "_clean_attribute_value", spy)
    starter("send orders", None, SpanKind.PRODUCER, ATTRIBUTES).end()
    assert starter.fast is True
    assert cleaned == []
    tracer.start_span("send orders", None, SpanKind.PRODUCER, ATTRIBUTES).end()
    assert cleaned  # the public path cleans
    exporter.clear()
    both_ways(tp, exporter)
    [span, _] = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == ATTRIBUTES
    assert list(span.attributes or {}) == list(ATTRIBUTES)  # order kept


def test_the_span_stays_mutable_and_limited_after_the_fast_path() -> None:
    """Attributes set later on a fast-path span go through the SDK as usual."""
    tp, exporter = provider()
    span = SpanStarter(tp.get_tracer("test"))("send orders", None, SpanKind.PRODUCER, ATTRIBUTES)
    span.set_attribute("error.type", "KafkaError")
    span.set_attribute("choreoscope.envelope.problems", ["a", "b"])
    span.end()
    [done] = exporter.get_finished_spans()
    assert done.attributes is not None
    assert done.attributes["error.type"] == "KafkaError"
    assert done.attributes["choreoscope.envelope.problems"] == ("a", "b")


def test_span_limits_are_honoured_on_the_fallback() -> None:
    """A value length limit or a too small attribute count limit: the SDK truncates and drops."""
    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=5)
    tp, exporter = provider(span_limits=limits)
    both_ways(tp, exporter)
    [span, _] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert len(span.attributes) == 3
    assert span.dropped_attributes == len(ATTRIBUTES) - 3
    assert all(len(v) <= 5 for v in span.attributes.values() if isinstance(v, str))


def test_a_count_limit_with_room_keeps_the_fast_path() -> None:
    """A count limit above the number of attributes changes nothing."""
    tp, exporter = provider(span_limits=SpanLimits(max_span_attributes=len(ATTRIBUTES)))
    both_ways(tp, exporter)
    [span, _] = exporter.get_finished_spans()
    assert span.dropped_attributes == 0


LATER: dict[str, Any] = {
    "choreoscope.envelope.problems": ("missing_id", "bad_time"),
    "choreoscope.out_of_order": True,
}


@pytest.mark.parametrize("limits", [None, SpanLimits(max_span_attribute_length=4)])
def test_later_attributes_are_set_after_the_start_both_ways(limits: SpanLimits | None) -> None:
    """`later` attributes end up on the span as `set_attributes` puts them, fast or not."""
    tp, exporter = provider(span_limits=limits)
    tracer = tp.get_tracer("test")
    SpanStarter(tracer)("process orders", PARENT, SpanKind.CONSUMER, ATTRIBUTES, None, LATER).end()
    span = tracer.start_span("process orders", PARENT, SpanKind.CONSUMER, ATTRIBUTES)
    span.set_attributes(LATER)
    span.end()
    fast, public = exporter.get_finished_spans()
    assert shape(fast) == shape(public)
    if limits is None:
        assert dict(fast.attributes or {}) == {**ATTRIBUTES, **LATER}


class RecordingSampler(Sampler):
    """Samples everything except spans marked `drop`; remembers the attributes it was given."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        if (attributes or {}).get("drop"):
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "RecordingSampler"


@pytest.mark.parametrize("wrap", [False, True], ids=["alone", "under-parent-based"])
def test_a_custom_sampler_still_sees_the_attributes(wrap: bool) -> None:
    """A sampler other than the SDK's static ones is given the attributes, alone or delegated to."""
    sampler = RecordingSampler()
    tp, exporter = provider(
        sampler=ParentBased(sampler, remote_parent_sampled=sampler) if wrap else sampler
    )
    starter = both_ways(tp, exporter)
    assert starter.fast is False
    assert sampler.seen == [ATTRIBUTES, ATTRIBUTES]
    dropped = starter("x", PARENT, SpanKind.CONSUMER, {**ATTRIBUTES, "drop": True}, None, LATER)
    assert not dropped.is_recording()
    starter("x", PARENT, SpanKind.CONSUMER, ATTRIBUTES, None, LATER).end()
    assert sampler.seen[-1] == ATTRIBUTES  # the later ones are not shown to the sampler
    assert dict(exporter.get_finished_spans()[-1].attributes or {}) == {**ATTRIBUTES, **LATER}


def test_the_ratio_sampler_is_given_the_attributes() -> None:
    """Only the static samplers are taken as ignoring attributes."""
    tp, exporter = provider(sampler=TraceIdRatioBased(1.0))
    assert both_ways(tp, exporter).fast is False


def test_an_always_off_sampler_gives_non_recording_spans() -> None:
    """ParentBased(ALWAYS_OFF) on a root span: not recording, nothing exported."""
    from opentelemetry.sdk.trace.sampling import DEFAULT_OFF

    tp, exporter = provider(sampler=DEFAULT_OFF)
    starter = SpanStarter(tp.get_tracer("test"))
    span = starter("send orders", None, SpanKind.PRODUCER, ATTRIBUTES)
    span.end()
    assert starter.fast is True
    assert not span.is_recording()
    assert exporter.get_finished_spans() == ()


class StartWatcher(SpanProcessor):
    """Remembers the attributes each span had when it started."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


def test_a_processor_watching_span_starts_sees_the_attributes() -> None:
    """A processor with its own `on_start`, even one added later, sees the attributes at start."""
    tp, _ = provider()
    starter = SpanStarter(tp.get_tracer("test"))
    starter("send orders", None, SpanKind.PRODUCER, ATTRIBUTES).end()
    assert starter.fast is True
    watcher = StartWatcher()
    tp.add_span_processor(watcher)
    starter("send orders", None, SpanKind.PRODUCER, ATTRIBUTES).end()
    assert starter.fast is False
    assert watcher.at_start == [ATTRIBUTES]


def test_batch_processors_keep_the_fast_path() -> None:
    """The SDK's BatchSpanProcessor does nothing at span start."""
    tp, exporter = provider()
    tp.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    assert both_ways(tp, exporter).fast is True
    tp.shutdown()


def test_a_proxy_tracer_without_a_provider_gives_non_recording_spans() -> None:
    """Before any provider is installed the API's proxy hands out no-op spans."""
    span = SpanStarter(trace.ProxyTracer("test"))("send x", None, SpanKind.PRODUCER, ATTRIBUTES)
    assert not span.is_recording()


def test_a_proxy_tracer_resolved_to_the_sdk_takes_the_fast_path(monkeypatch: Any) -> None:
    """Once the global provider is the SDK's, the proxy's real tracer is used directly."""
    tp, exporter = provider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", tp)
    proxy = trace.ProxyTracer("test")
    starter = SpanStarter(proxy)
    starter("send x", None, SpanKind.PRODUCER, ATTRIBUTES).end()  # resolves the proxy
    starter("send x", None, SpanKind.PRODUCER, ATTRIBUTES).end()
    assert starter.fast is True
    assert [dict(s.attributes or {}) for s in exporter.get_finished_spans()] == [ATTRIBUTES] * 2


def test_a_non_sdk_tracer_gets_the_attributes_through_the_api() -> None:
    """Any other tracer is called with the attributes as they are."""
    calls: list[tuple[Any, ...]] = []

    class OtherTracer(trace.NoOpTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return super().start_span(*args, **kwargs)

    SpanStarter(OtherTracer())("send x", None, SpanKind.PRODUCER, ATTRIBUTES)
    assert calls[0][3] == ATTRIBUTES


@pytest.mark.broker
def test_producer_spans_are_the_same_with_a_custom_sampler(bootstrap: str, topic: str) -> None:
    """A producer under a custom sampler exports the same attributes and the sampler sees them."""
    exported = []
    offsets = []
    seen: list[dict[str, Any]] = []
    for sampler in (ALWAYS_ON, RecordingSampler()):
        tp, exporter = provider(sampler=sampler)
        raw = KafkaProducer(bootstrap_servers=bootstrap)
        producer = instrument_producer(raw, service="orders", tracer_provider=tp)
        event = producer.publish(topic, "order.placed", {"n": 1}, key="ord_1")
        producer.flush()
        raw.close(timeout=5)
        [span] = exporter.get_finished_spans()
        attributes = dict(span.attributes or {})
        for name in ("messaging.message.id", "cloudevents.event_id"):
            assert attributes.pop(name) == event.id
        conversation = attributes.pop("messaging.message.conversation_id")
        assert conversation == event.correlation_id
        offsets.append(attributes.pop("messaging.kafka.offset"))
        exported.append((span.name, span.kind, attributes))
        if isinstance(sampler, RecordingSampler):
            seen = sampler.seen
    assert exported[0] == exported[1]
    assert offsets == [0, 1]  # one key, one partition: the second record follows the first
    assert seen and seen[0]["cloudevents.event_type"] == "order.placed"
