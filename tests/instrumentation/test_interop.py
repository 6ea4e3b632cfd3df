"""Interop on the embedded broker: OpenTelemetry's own Kafka instrumentation, confluent-kafka,
and the CloudEvents SDK's Kafka binding, in both directions where it applies."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import (
    KafkaMessage,
    from_binary,
    from_structured,
    to_binary,
    to_structured,
)
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreoscope.instrumentation import Event, instrument_producer, traced_consumer
from choreoscope.instrumentation.decoder import decode_record
from tests.instrumentation._bus import consume, produce

pytestmark = pytest.mark.broker

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HAND_WRITTEN = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"conf-1"),
    ("ce_type", b"stock.reserved"),
    ("ce_source", b"inventory"),
    ("ce_time", b"2026-11-26T05:35:14.5+01:00"),
    ("ce_subject", b"sku_9"),
    ("ce_schemaversion", b"3"),
    ("ce_correlationid", b"corr-7"),
    ("ce_causationid", b"cause-7"),
    ("ce_sequence", b"11"),
    ("traceparent", TP.encode()),
]


def handle_one(record: Any, tracer_provider: TracerProvider, group: str = "g") -> Event:
    """Run `record` through a traced_consumer handler and return the event it got."""
    got: list[Event] = []
    traced_consumer(service="svc", group=group, tracer_provider=tracer_provider)(got.append)(record)
    return got[0]


# --- OpenTelemetry's kafka-python instrumentation ----------------------------------------


def test_opentelemetry_instrumented_producer_is_continued(
    bootstrap: str,
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A record sent through OpenTelemetry's KafkaInstrumentor is handled in the same trace,
    with OpenTelemetry's send span as the parent, also after OpenTelemetry's own receive span."""
    from opentelemetry.instrumentation.kafka import KafkaInstrumentor

    instrumentor = KafkaInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(topic, b'{"order": 1}', partition=0).get(10)
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10_000)
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        record = next(consumer)  # instrumented: OpenTelemetry's receive span
        consumer.close()
    finally:
        instrumentor.uninstrument()

    event = handle_one(record, tracer_provider)
    spans = span_exporter.get_finished_spans()
    by_kind = {(s.kind, s.name): s for s in spans}
    send = by_kind[(SpanKind.PRODUCER, f"{topic} send")]
    receive = by_kind[(SpanKind.CONSUMER, f"{topic} receive")]
    process = by_kind[(SpanKind.CONSUMER, f"process {topic}")]
    assert process.context.trace_id == send.context.trace_id == receive.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.parent.is_remote
    # Without ce_* headers the event is of unknown type, but its data and trace are kept.
    assert (event.data, event.envelope) == ({"order": 1}, "unknown")
    assert event.traceparent is not None and event.traceparent[3:35] == (
        f"{send.context.trace_id:032x}"
    )
    assert event.problems == ["no_envelope: no ce_* headers and no JSON envelope in the value"]
    assert dict(process.attributes or {})["choreoscope.envelope.problems"] == tuple(event.problems)


def test_uninstrument_restores_kafka_python(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """After uninstrument() kafka-python sends no traceparent of its own again."""
    from opentelemetry.instrumentation.kafka import KafkaInstrumentor

    instrumentor = KafkaInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        produce(bootstrap, topic, [(b"a", None)])
    finally:
        instrumentor.uninstrument()
    produce(bootstrap, topic, [(b"b", None)])
    first, second = consume(bootstrap, topic, 2)
    assert [name for name, _ in first.headers] == ["traceparent"]
    assert second.headers == []


def test_our_sends_under_an_active_instrumentor_carry_one_span_and_one_traceparent(
    bootstrap: str, topic: str, tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """With OpenTelemetry's KafkaInstrumentor active (also when instrumented after our
    producer was made), a send through our producer is one PRODUCER span, ours, and one
    `traceparent`; a plain send of the same kafka-python client is still OpenTelemetry's."""
    from opentelemetry.instrumentation.kafka import KafkaInstrumentor

    producer = instrument_producer(KafkaProducer(bootstrap_servers=bootstrap), service="shop",
                                   tracer_provider=tracer_provider)
    producer.send(topic, b'{"n": 1}', key=b"o1", partition=0).get(10)
    instrumentor = KafkaInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        producer.send(topic, b'{"n": 2}', key=b"o2", partition=0).get(10)
        producer.wrapped.send(topic, b'{"n": 3}', partition=0).get(10)
    finally:
        instrumentor.uninstrument()
    producer.send(topic, b'{"n": 4}', key=b"o4", partition=0).get(10)
    producer.close()

    records = consume(bootstrap, topic, 4)
    traceparents = [[v.decode() for k, v in r.headers if k == "traceparent"] for r in records]
    assert [len(t) for t in traceparents] == [1, 1, 1, 1]
    sends = sorted((s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER),
                   key=lambda s: s.start_time or 0)
    assert [(s.name, s.instrumentation_scope.name.startswith("choreoscope")) for s in sends] == [
        (f"send {topic}", True), (f"send {topic}", True), (f"{topic} send", False),
        (f"send {topic}", True)]
    for record, tp, span in zip(records, traceparents, sends, strict=True):
        assert tp[0][:52] == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}", record
    assert [decode_record(r.headers, r.value, topic=topic).problems for r in records[:2]] == [
        [], []]


# --- confluent-kafka -------------------------------------------------------------------


def test_confluent_kafka_hand_written_headers(
    bootstrap: str, topic: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A record produced by confluent-kafka with hand-written ce_* headers decodes fully,
    through our decorator (kafka-python record), as confluent-kafka consumes it, and through
    our decorator again when handed the confluent-kafka Message."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
    from confluent_kafka import TopicPartition as CTopicPartition

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b'{"qty": 2}', key=b"sku_9", headers=HAND_WRITTEN, partition=0)
    assert producer.flush(10) == 0

    (record,) = consume(bootstrap, topic, 1)
    event = handle_one(record, tracer_provider)
    assert (event.id, event.type, event.source, event.subject) == (
        "conf-1",
        "stock.reserved",
        "inventory",
        "sku_9",
    )
    assert (event.time, event.schema_version, event.sequence) == (
        "2026-11-26T05:35:14.5+01:00",
        "3",
        11,
    )
    assert (event.correlation_id, event.causation_id, event.data) == (
        "corr-7",
        "cause-7",
        {"qty": 2},
    )
    assert (event.key, event.traceparent, event.envelope, event.problems) == (
        b"sku_9",
        TP,
        "binary",
        [],
    )
    (span,) = span_exporter.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == int(TP[36:52], 16)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([CTopicPartition(topic, 0, OFFSET_BEGINNING)])
        message = None
        deadline = time.monotonic() + 15
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error():
                message = None
        assert message is not None
        handled = handle_one(message, tracer_provider)  # a confluent-kafka Message, handed over
        decoded = decode_record(
            message.headers(),
            message.value(),
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            timestamp_ms=message.timestamp()[1],
        )
    finally:
        consumer.close()
    event.timestamp_ms = decoded.timestamp_ms  # kafka-python and confluent agree on the rest
    assert (decoded, decoded.problems) == (event, [])
    assert (handled, handled.problems) == (decoded, [])
    process = span_exporter.get_finished_spans()[-1]
    assert (process.attributes["messaging.message.id"], process.parent.span_id) == (
        "conf-1", int(TP[36:52], 16))


# --- CloudEvents SDK -------------------------------------------------------------------


def sdk_event() -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": "sdk-1",
            "type": "order.placed",
            "source": "/shop",
            "specversion": "1.0",
            "time": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "subject": "ord_1",
            "datacontenttype": "application/json",
            "correlationid": "corr-1",
            "causationid": "evt-0",
            "schemaversion": "2",
            "sequence": "5",
        },
        data={"a": 1},
    )


def check_sdk_event(event: Event) -> None:
    assert (event.id, event.type, event.source, event.subject, event.time) == (
        "sdk-1",
        "order.placed",
        "/shop",
        "ord_1",
        "2026-01-02T03:04:05Z",
    )
    assert (event.correlation_id, event.causation_id, event.schema_version, event.sequence) == (
        "corr-1",
        "evt-0",
        "2",
        5,
    )
    assert (event.data, event.problems) == ({"a": 1}, [])


def test_cloudevents_sdk_binary_is_read(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """What the CloudEvents SDK writes in binary mode, our decorator reads."""
    message = to_binary(sdk_event(), JSONFormat())
    produce(bootstrap, topic, [(message.value, list(message.headers.items()))], key=b"ord_1")
    (record,) = consume(bootstrap, topic, 1)
    event = handle_one(record, tracer_provider)
    check_sdk_event(event)
    assert event.envelope == "binary"


def test_cloudevents_sdk_structured_is_read(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """What the CloudEvents SDK writes in structured mode, our decorator reads."""
    message = to_structured(sdk_event(), JSONFormat())
    produce(bootstrap, topic, [(message.value, list(message.headers.items()))])
    (record,) = consume(bootstrap, topic, 1)
    event = handle_one(record, tracer_provider)
    check_sdk_event(event)
    assert event.envelope == "structured"


def test_what_we_write_the_sdk_reads(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """What our instrumented producer writes, the CloudEvents SDK's from_binary reads."""
    kafka = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer = instrument_producer(kafka, service="orders", tracer_provider=tracer_provider)
        sent = producer.publish(topic, "order.placed", {"a": [1, 2]}, key="ord_1", sequence=3)
        kafka.flush(10)
    finally:
        kafka.close()
    (record,) = consume(bootstrap, topic, 1)
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    read = from_binary(message, JSONFormat())
    assert (read.get_id(), read.get_type(), read.get_source(), read.get_subject()) == (
        sent.id,
        "order.placed",
        "orders",
        "ord_1",
    )
    assert read.get_specversion() == "1.0"
    assert read.get_time() == dt.datetime.fromisoformat(sent.time)
    assert read.get_extension("correlationid") == sent.correlation_id
    assert read.get_extension("schemaversion") == "1"
    assert read.get_extension("sequence") == "3"
    assert read.get_data() == {"a": [1, 2]}


def test_our_event_as_sdk_structured_round_trip() -> None:
    """Our decoded event, written by the SDK in structured mode, decodes back to the same envelope."""
    message = to_structured(sdk_event(), JSONFormat())
    read = from_structured(message, JSONFormat())
    event = decode_record(list(message.headers.items()), message.value)
    assert (event.id, event.type, event.time) == (
        read.get_id(),
        read.get_type(),
        read.get_time().isoformat().replace("+00:00", "Z"),
    )
    assert json.loads(message.value)["data"] == event.data
