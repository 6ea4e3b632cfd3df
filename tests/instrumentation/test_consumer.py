"""traced_consumer on records read back from the embedded broker."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from choreoscope.instrumentation import Event, UsageError, carry_context, current_event, semconv
from choreoscope.instrumentation.consumer import traced_consumer
from tests.instrumentation._bus import PARENT_SPAN_ID, TRACE_ID, TRACEPARENT, ce_headers, round_trip

pytestmark = pytest.mark.broker

ENVELOPE = {
    "specversion": "1.0",
    "id": "evt-1",
    "type": "order.placed",
    "source": "shop",
    "time": "2026-01-01T10:00:00Z",
    "subject": "ord_1",
    "schemaversion": "1",
    "correlationid": "corr-1",
    "causationid": "evt-0",
    "traceparent": TRACEPARENT,
}


def one_record(bootstrap: str, topic: str, **overrides: str) -> Any:
    fields = {**ENVELOPE, **overrides}
    return round_trip(bootstrap, topic, [(b'{"total": 12}', ce_headers(**fields))], key=b"ord_1")[0]


def test_span_around_handler(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """The handler gets the decoded event inside a CONSUMER span that continues the producer's trace."""
    record = one_record(bootstrap, topic)
    seen: list[Event] = []

    @traced_consumer(service="billing", group="billing-g", tracer_provider=tracer_provider)
    def handle(event: Event) -> str:
        seen.append(event)
        return "done"

    assert handle(record) == "done"
    (event,) = seen
    assert (event.id, event.type, event.source, event.subject) == (
        "evt-1",
        "order.placed",
        "shop",
        "ord_1",
    )
    assert (event.correlation_id, event.causation_id, event.data) == (
        "corr-1",
        "evt-0",
        {"total": 12},
    )
    assert (event.topic, event.partition, event.offset, event.key) == (topic, 0, 0, b"ord_1")
    assert event.problems == []
    (span,) = span_exporter.get_finished_spans()
    assert span.name == f"process {topic}"
    assert span.kind is SpanKind.CONSUMER
    assert span.context.trace_id == TRACE_ID
    assert (
        span.parent is not None and span.parent.span_id == PARENT_SPAN_ID and span.parent.is_remote
    )
    assert list(span.links) == []
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": "billing-g",
        "choreoscope.service": "billing",
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
        "messaging.kafka.message.key": "ord_1",
        "messaging.message.id": "evt-1",
        "messaging.message.conversation_id": "corr-1",
        "cloudevents.event_id": "evt-1",
        "cloudevents.event_type": "order.placed",
        "cloudevents.event_source": "shop",
        "cloudevents.event_subject": "ord_1",
        "choreoscope.causation_id": "evt-0",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == semconv.process_attributes(event, "billing-g", "billing")


def test_no_group_attribute_without_group(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """Without a group the span has no messaging.consumer.group.name."""
    record = one_record(bootstrap, topic)
    traced_consumer(service="billing", tracer_provider=tracer_provider)(lambda event: None)(record)
    (span,) = span_exporter.get_finished_spans()
    assert "messaging.consumer.group.name" not in (span.attributes or {})


def test_async_handler(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An async handler gives an async wrapper whose span covers the awaited handler."""
    record = one_record(bootstrap, topic)

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    async def handle(event: Event) -> tuple[str | None, int]:
        await asyncio.sleep(0)
        current = trace.get_current_span().get_span_context()
        event_now = current_event()
        return (event_now.id if event_now else None), current.trace_id

    assert inspect.iscoroutinefunction(handle)
    assert asyncio.run(handle(record)) == ("evt-1", TRACE_ID)
    (span,) = span_exporter.get_finished_spans()
    assert (span.name, span.context.trace_id) == (f"process {topic}", TRACE_ID)
    assert current_event() is None


def test_handler_exception_recorded_and_reraised(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """The handler's own exception is recorded, marks the span ERROR and propagates as the same object."""
    record = one_record(bootstrap, topic)
    boom = KeyError("ord_1")

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    def handle(event: Event) -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        handle(record)
    assert info.value is boom
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "KeyError"
    (exc_event,) = span.events
    assert exc_event.name == "exception"
    assert (exc_event.attributes or {})["exception.type"] == "KeyError"
    assert current_event() is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_async_handler_exception(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An async handler's exception is recorded and re-raised unchanged."""
    record = one_record(bootstrap, topic)
    boom = ValueError("bad total")

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    async def handle(event: Event) -> None:
        raise boom

    with pytest.raises(ValueError) as info:
        asyncio.run(handle(record))
    assert info.value is boom
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ValueError"


def test_current_event_inside_and_outside(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """current_event() and the current span are the handled event and consumer span only inside."""
    record = one_record(bootstrap, topic)
    inside: list[Any] = []

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    def handle(event: Event) -> None:
        inside.append((current_event(), trace.get_current_span().get_span_context().span_id))

    assert current_event() is None
    handle(record)
    assert current_event() is None
    (span,) = span_exporter.get_finished_spans()
    ((event, span_id),) = inside
    assert event is not None and event.id == "evt-1"
    assert span_id == span.context.span_id


def test_carry_context_refuses_what_it_cannot_call() -> None:
    """A non-callable is refused when wrapped, not when the thread later calls it."""
    with pytest.raises(UsageError, match="expected a function to carry the context into, got 5"):
        carry_context(5)  # type: ignore[arg-type]


def test_carry_context_into_thread(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A thread started through carry_context inside a handler sees the event and the consumer span."""
    record = one_record(bootstrap, topic)
    carried: list[Any] = []
    bare: list[Any] = []

    def look(into: list[Any]) -> None:
        event = current_event()
        into.append(
            (event.id if event else None, trace.get_current_span().get_span_context().span_id)
        )

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    def handle(event: Event) -> None:
        for target, into in ((carry_context(look), carried), (look, bare)):
            thread = threading.Thread(target=target, args=(into,))
            thread.start()
            thread.join()

    handle(record)
    (span,) = span_exporter.get_finished_spans()
    assert carried == [("evt-1", span.context.span_id)]
    assert bare == [(None, 0)]


def test_link_to_ambient_span(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A span current around the call becomes a link, while the parent stays the producer's span."""
    record = one_record(bootstrap, topic)
    handle = traced_consumer(service="billing", tracer_provider=tracer_provider)(lambda e: None)
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("poll loop") as ambient:
        handle(record)
    process = next(s for s in span_exporter.get_finished_spans() if s.name.startswith("process"))
    assert process.parent is not None and process.parent.span_id == PARENT_SPAN_ID
    (link,) = process.links
    assert link.context.span_id == ambient.get_span_context().span_id
    assert process.context.trace_id == TRACE_ID != ambient.get_span_context().trace_id


def test_extra_arguments_pass_through(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """Arguments after the record reach the handler after the event, and the name is kept."""
    record = one_record(bootstrap, topic)

    @traced_consumer(service="billing", tracer_provider=tracer_provider)
    def handle(event: Event, factor: int, *, label: str) -> str:
        """Doc of the handler."""
        return f"{label}:{event.data['total'] * factor}"

    assert handle(record, 2, label="x") == "x:24"
    assert (handle.__name__, handle.__doc__) == ("handle", "Doc of the handler.")


def test_out_of_order_sequence_marked(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A lower ce_sequence for a subject after a higher one is marked on its span with what came before."""
    pairs = [
        (b"{}", ce_headers(**{**ENVELOPE, "id": f"e{seq}", "sequence": str(seq)}))
        for seq in (1, 3, 2)
    ]
    records = round_trip(bootstrap, topic, pairs)
    handle = traced_consumer(service="billing", group="g", tracer_provider=tracer_provider)(
        lambda e: None
    )
    for record in records:
        handle(record)
    spans = span_exporter.get_finished_spans()
    assert [(s.attributes or {}).get("choreoscope.out_of_order") for s in spans] == [
        None,
        None,
        True,
    ]
    assert [len(s.events) for s in spans] == [0, 0, 1]
    late = spans[2].events[0]
    assert late.name == "choreoscope.out_of_order"
    assert dict(late.attributes or {}) == {
        "choreoscope.out_of_order.reason": "sequence",
        "choreoscope.previous.event_id": "e3",
        "choreoscope.previous.sequence": 3,
    }


def test_out_of_order_time_beyond_skew(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An older ce_time is marked only when it is older than the newest seen by more than the skew."""
    times = ["2026-01-01T10:00:05Z", "2026-01-01T10:00:04.500Z", "2026-01-01T10:00:03Z"]
    pairs = [
        (b"{}", ce_headers(**{**ENVELOPE, "id": f"e{i}", "time": t})) for i, t in enumerate(times)
    ]
    records = round_trip(bootstrap, topic, pairs)
    handle = traced_consumer(service="billing", skew=1.0, tracer_provider=tracer_provider)(
        lambda e: None
    )
    for record in records:
        handle(record)
    spans = span_exporter.get_finished_spans()
    assert [(s.attributes or {}).get("choreoscope.out_of_order") for s in spans] == [
        None,
        None,
        True,
    ]
    assert dict(spans[2].events[0].attributes or {}) == {
        "choreoscope.out_of_order.reason": "time",
        "choreoscope.previous.event_id": "e0",
        "choreoscope.previous.time": "2026-01-01T10:00:05Z",
    }


def test_bad_configuration_rejected() -> None:
    """Misconfiguration fails at decoration time with 'expected X, got Y'."""
    with pytest.raises(ValueError, match="expected a non-empty service name, got ''"):
        traced_consumer(service="")
    with pytest.raises(ValueError, match="expected skew >= 0 seconds, got -1"):
        traced_consumer(service="s", skew=-1)
    with pytest.raises(ValueError, match="expected max_subjects >= 1, got 0"):
        traced_consumer(service="s", max_subjects=0)
    with pytest.raises(UsageError, match=r"expected a handler \(event\) -> Any, got int"):
        traced_consumer(service="s")(42)  # type: ignore[call-overload]

    def gen(event: Event):  # type: ignore[no-untyped-def]
        yield event

    async def agen(event: Event):  # type: ignore[no-untyped-def]
        yield event

    for fn in (gen, agen):
        with pytest.raises(UsageError, match=r"got the generator function .*gen'"):
            traced_consumer(service="s")(fn)
    with pytest.raises(UsageError, match="expected the service name as a str, got int"):
        traced_consumer(service=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a non-empty consumer group name or None"):
        traced_consumer(service="s", group="")


def on_order(event: Event) -> None:
    pass


def test_options_by_position_or_missing_are_explained() -> None:
    """`@traced_consumer` without its options, the service by position, or no service at all:
    a UsageError that shows the right form, not Python's bare argument-count TypeError."""
    with pytest.raises(UsageError) as bare:
        traced_consumer(on_order)  # type: ignore[arg-type]  # what `@traced_consumer` alone does
    assert str(bare.value) == (
        'expected the options by keyword, as in @traced_consumer(service="payment-service"), '
        "got @traced_consumer without them above on_order()")
    with pytest.raises(UsageError) as positional:
        traced_consumer("billing")  # type: ignore[arg-type]
    assert str(positional.value) == (
        'expected the options by keyword, as in @traced_consumer(service="payment-service"), '
        "got 'billing' by position")
    with pytest.raises(UsageError) as missing:
        traced_consumer()
    assert str(missing.value) == "expected service=, the consuming service's name, got none"


@pytest.mark.filterwarnings("ignore:.*does not implement kafka.serializer:DeprecationWarning")
def test_consumer_with_deserializers(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """Records from a consumer with key and value deserializers decode and get their span."""
    import json

    from kafka import KafkaConsumer, TopicPartition

    one_record(bootstrap, topic)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
        consumer_timeout_ms=10_000,
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        record = next(consumer)
    finally:
        consumer.close()
    assert (record.key, record.value) == ("ord_1", {"total": 12})
    got: list[Event] = []
    traced_consumer(service="billing", tracer_provider=tracer_provider)(got.append)(record)
    (event,) = got
    assert (event.key, event.data, event.id, event.problems) == (
        b"ord_1",
        {"total": 12},
        "evt-1",
        [],
    )
    (span,) = span_exporter.get_finished_spans()
    assert (span.attributes or {})["messaging.kafka.message.key"] == "ord_1"
    assert span.context.trace_id == TRACE_ID


def test_async_callable_object(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An object with an async __call__ is wrapped as an async handler too."""
    record = one_record(bootstrap, topic)

    class Handler:
        async def __call__(self, event: Event) -> str | None:
            await asyncio.sleep(0)
            return event.id

    handle = traced_consumer(service="billing", tracer_provider=tracer_provider)(Handler())
    assert inspect.iscoroutinefunction(handle)
    assert asyncio.run(handle(record)) == "evt-1"
    (span,) = span_exporter.get_finished_spans()
    assert span.name == f"process {topic}"


def test_method_handlers(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A decorated method (sync or async) takes the record after self and gets the event."""
    record = one_record(bootstrap, topic)

    class Service:
        prefix = "seen"

        @traced_consumer(service="billing", tracer_provider=tracer_provider)
        def handle(self, event: Event) -> str:
            return f"{self.prefix}:{event.id}"

        @traced_consumer(service="billing", tracer_provider=tracer_provider)
        async def handle_async(self, event: Event) -> str:
            return f"{self.prefix}:{event.id}"

    service = Service()
    assert service.handle(record) == "seen:evt-1"
    assert asyncio.run(service.handle_async(record)) == "seen:evt-1"
    assert [s.name for s in span_exporter.get_finished_spans()] == [f"process {topic}"] * 2


def test_event_passed_directly(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """An already decoded Event can be handed to the wrapper (handy in unit tests)."""
    event = Event(id="e-9", type="order.placed", source="shop", topic="orders", partition=0)
    seen: list[Event] = []
    traced_consumer(service="billing", tracer_provider=tracer_provider)(seen.append)(event)
    assert seen == [event] and seen[0] is event
    (span,) = span_exporter.get_finished_spans()
    assert (span.name, (span.attributes or {})["messaging.message.id"]) == ("process orders", "e-9")


@pytest.mark.parametrize("batch", [[], ["r1", "r2"], ("r1",), {"tp": ["r1"]}])
def test_a_batch_is_refused_with_what_to_do(tracer_provider: TracerProvider, batch) -> None:
    """A poll() result or a list of records given to a per-record handler is a mistake: a
    UsageError says so before the handler runs (it would handle an empty record)."""
    seen: list[Event] = []
    handle = traced_consumer(service="billing", tracer_provider=tracer_provider)(seen.append)
    with pytest.raises(UsageError, match=f"expected one Kafka ConsumerRecord per call, got a "
                                         f"{type(batch).__name__} of {len(batch)}: call the "
                                         "handler once per record"):
        handle(batch)
    assert seen == []


def test_not_a_record_warns_once(
    tracer_provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Something that is not a record is still handled (as empty), with one warning per type."""

    class NotARecord:
        pass

    seen: list[Event] = []
    handle = traced_consumer(service="billing", tracer_provider=tracer_provider)(seen.append)
    with caplog.at_level("WARNING", logger="choreoscope.instrumentation.consumer"):
        handle(NotARecord())
        handle(NotARecord())
    assert [e.envelope for e in seen] == ["unknown", "unknown"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "choreoscope: expected a Kafka ConsumerRecord, got NotARecord; handled as an empty record"
    ]
