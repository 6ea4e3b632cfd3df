"""The instrumented producer on the real embedded broker: headers, values, spans, failures."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.serializer import Serializer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from choreoscope.instrumentation import semconv, traced_producer
from choreoscope.instrumentation.context import handling
from choreoscope.instrumentation.errors import ChoreoscopeError, UsageError
from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.producer import TracedProducer, instrument_producer
from choreoscope.instrumentation.testing import CapturedSpans, captured_spans, wait_for_spans  # noqa: F401
from choreoscope.instrumentation.traceparent import format_traceparent, parse_traceparent

pytestmark = pytest.mark.broker

CALLER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def producer(bootstrap: str, tracer_provider: TracerProvider) -> Iterator[TracedProducer]:
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    traced = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    yield traced
    raw.close(timeout=5)


def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first `count` records of `topic` (all partitions), in partition then offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def traceparent_of(span: Any) -> str:
    ctx = span.get_span_context()
    return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)


def unique_type(stem: str) -> str:
    return f"{stem}{uuid.uuid4().hex[:6]}.placed"


# -- publish -------------------------------------------------------------------------------


def test_publish_writes_exactly_the_envelope_headers(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """A keyed publish carries exactly the ce_* headers with values, then traceparent, in order."""
    event = producer.publish(topic, "order.placed", {"total": 42}, key="ord_7821", sequence=3)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    [span] = span_exporter.get_finished_spans()
    assert record.headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.id.encode()),
        ("ce_type", b"order.placed"),
        ("ce_source", b"orders"),
        ("ce_time", event.time.encode()),
        ("ce_subject", b"ord_7821"),
        ("ce_schemaversion", b"1"),
        ("ce_correlationid", event.id.encode()),
        ("ce_sequence", b"3"),
        ("traceparent", traceparent_of(span).encode()),
    ]
    assert record.key == b"ord_7821"
    assert record.value == b'{"total":42}'


def test_root_publish_leaves_out_headers_without_a_value(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """Without key, subject, cause or sequence those headers (and content-type) are absent."""
    producer.publish(topic, "order.placed", {"total": 1})
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    assert [name for name, _ in record.headers] == [
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "ce_schemaversion",
        "ce_correlationid",
        "traceparent",
    ]
    assert record.key is None


def test_publish_returns_the_event_with_a_uuidv7_root_id(
    producer: TracedProducer, topic: str
) -> None:
    """Outside a handler the event is a root: its own correlation id and no causation id."""
    event = producer.publish(topic, "order.placed", {"n": 1}, subject="ord_1", schema_version="2")
    producer.flush()
    assert uuid.UUID(event.id).version == 7
    assert (event.type, event.source, event.subject, event.schema_version) == (
        "order.placed",
        "orders",
        "ord_1",
        "2",
    )
    assert event.correlation_id == event.id
    assert event.causation_id is None
    assert event.data == {"n": 1}
    assert event.time.endswith("Z") and event.time[10] == "T"
    parse_traceparent(event.traceparent)


def test_producer_span_name_kind_and_attributes_are_exact(
    producer: TracedProducer, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """The span is `send {topic}`, PRODUCER, with semconv's send attributes, the partition
    and offset the broker gave the record, and status UNSET."""
    first = producer.send(topic, value=b"{}", key=b"ord_9").get(10)  # one key: one partition
    span_exporter.clear()
    event = producer.publish(topic, "order.placed", {"n": 1}, key=b"ord_9")
    producer.flush()
    [span] = span_exporter.get_finished_spans()
    assert span.name == f"send {topic}"
    assert span.kind is SpanKind.PRODUCER
    assert dict(span.attributes) == {
        **semconv.send_attributes(topic, event, "ord_9"),
        semconv.MESSAGING_DESTINATION_PARTITION_ID: str(first.partition),
        semconv.MESSAGING_KAFKA_OFFSET: first.offset + 1}
    assert dict(span.attributes)[semconv.MESSAGING_MESSAGE_ID] == event.id
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


def test_publish_inside_a_handler_continues_the_chain_and_the_trace(
    producer: TracedProducer,
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Correlation id inherited, causation id = handled id, span parent = the current span."""
    handled = Event(
        id="evt-handled", type="cart.checked_out", source="cart", correlation_id="flow-1"
    )
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("process cart") as consumer_span, handling(handled):
        event = producer.publish(topic, "order.placed", {"n": 1})
    producer.flush()
    assert (event.correlation_id, event.causation_id) == ("flow-1", "evt-handled")
    [send] = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert send.parent.span_id == consumer_span.get_span_context().span_id
    assert send.context.trace_id == consumer_span.get_span_context().trace_id
    assert dict(send.attributes)[semconv.CAUSATION_ID] == "evt-handled"
    assert dict(send.attributes)[semconv.MESSAGING_CONVERSATION_ID] == "flow-1"


def test_handled_event_without_correlation_id_becomes_the_correlation(
    producer: TracedProducer, topic: str
) -> None:
    """A handled event with no correlation id starts the flow: its id is the correlation id."""
    with handling(Event(id="evt-0", type="x.happened", source="legacy")):
        event = producer.publish(topic, "order.placed", {})
    producer.flush()
    assert (event.correlation_id, event.causation_id) == ("evt-0", "evt-0")


def test_handled_event_with_a_trace_but_no_correlation_id_passes_on_its_flow(
    producer: TracedProducer, topic: str
) -> None:
    """The collector keys an event with no correlation id by its trace id: an effect takes
    that as its correlation id, so cause and effect are one flow (a CloudEvents SDK event,
    or one sent under OpenTelemetry's own Kafka instrumentation, carries only a trace)."""
    handled = Event(id="ce-r14", type="invoice.created", source="billing",
                    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    with handling(handled):
        event = producer.publish(topic, "ledger.posted", {})
    producer.flush()
    assert (event.correlation_id, event.causation_id) == (
        "0af7651916cd43dd8448eb211c80319c", "ce-r14")


def test_handled_record_without_an_envelope_passes_on_its_flow(
    producer: TracedProducer, topic: str
) -> None:
    """A record with no id, correlation or trace (a bare JSON value from a producer without
    Choreoscope) is keyed by the collector as `topic/partition/offset`: an effect takes that
    as its correlation id, so the two are one flow (it names no cause: there is no id)."""
    handled = Event(id=None, type=None, source=None, topic="prices", partition=2, offset=41)
    with handling(handled):
        event = producer.publish(topic, "price.recorded", {})
    producer.flush()
    assert (event.correlation_id, event.causation_id) == ("prices/2/41", None)


# -- plain send ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "tuple", "none", "empty"])
def test_send_accepts_headers_as_list_tuple_or_none(
    producer: TracedProducer, bootstrap: str, topic: str, kind: str
) -> None:
    """Every form of `headers` works: the caller's come first, then the envelope."""
    given = {
        "list": [("app", b"1")],
        "tuple": (("app", b"1"),),
        "none": None,
        "empty": [],
    }[kind]
    producer.send(topic, value=b"{}", headers=given).get(10)
    [record] = read_back(bootstrap, topic, 1)
    names = [name for name, _ in record.headers]
    expected_app = ["app"] if kind in ("list", "tuple") else []
    assert names == [
        *expected_app,
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "ce_schemaversion",
        "ce_correlationid",
        "traceparent",
    ]


def test_send_never_mutates_the_callers_header_list(producer: TracedProducer, topic: str) -> None:
    """The list passed as `headers` is left exactly as it was."""
    headers = [("app", b"1")]
    producer.send(topic, value=b"{}", headers=headers).get(10)
    producer.send(topic, value=b"{}", headers=headers).get(10)
    assert headers == [("app", b"1")]


def test_a_caller_traceparent_parents_the_send_span_and_gives_way_to_it(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """Headers from `propagate.inject` (traceparent, tracestate) parent our span; the record
    carries the send span's context instead, once, so consumers are children of the send."""
    given = [("app", b"1"), ("TraceParent", CALLER_TRACEPARENT.encode()),
             ("tracestate", b"vendor=abc")]
    producer.send(topic, value=b"{}", headers=given)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    [span] = span_exporter.get_finished_spans()
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert span.context.trace_state.to_header() == "vendor=abc"
    ours = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}".encode()
    trace_headers = [(n, v) for n, v in record.headers if n.lower() in ("traceparent", "tracestate")]
    assert trace_headers == [("traceparent", ours), ("tracestate", b"vendor=abc")]
    assert record.headers[0] == ("app", b"1")
    assert given[1] == ("TraceParent", CALLER_TRACEPARENT.encode())  # the caller's list as it was


def test_an_invalid_caller_traceparent_is_replaced_by_the_send_span(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """An invalid caller traceparent parents nothing and does not reach the bus."""
    producer.send(topic, value=b"{}", headers=[("traceparent", b"00-nope")])
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    [span] = span_exporter.get_finished_spans()
    assert span.parent is None
    ours = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}".encode()
    assert [v for n, v in record.headers if n == "traceparent"] == [ours]


def test_ce_headers_the_caller_set_win_without_duplicates(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """A caller's ce_id and ce_type replace ours, once each, and name the event on the span."""
    caller = [("ce_id", b"my-id-1"), ("ce_type", b"invoice.issued")]
    producer.send(topic, value=b"{}", headers=caller)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    names = [name for name, _ in record.headers]
    assert len(names) == len(set(names))
    headers = dict(record.headers)
    assert (headers["ce_id"], headers["ce_type"]) == (b"my-id-1", b"invoice.issued")
    assert headers["ce_correlationid"] == b"my-id-1"
    [span] = span_exporter.get_finished_spans()
    attrs = dict(span.attributes)
    assert (attrs[semconv.CLOUDEVENTS_EVENT_ID], attrs[semconv.CLOUDEVENTS_EVENT_TYPE]) == (
        "my-id-1",
        "invoice.issued",
    )


LEGACY_ENVELOPE = {"eventId": "evt-123", "eventType": "price.changed", "source": "pricing",
                   "timestamp": "2026-01-02T03:04:05Z", "version": "2",
                   "correlationId": "corr-9", "causationId": "evt-100", "data": {"sku": "A"}}


def test_a_value_carrying_its_own_envelope_is_sent_as_it_is(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """A hand-written envelope (bytes or dict) gets no binary-mode header that would
    contradict it, only the trace context: it is read as the event it carries, and the span
    names that event. A payload merely holding such a key deeper down, or holding one key
    that could name an event and no other envelope key, is data as before."""
    from choreoscope.instrumentation.decoder import decode_record

    producer.send(topic, value=json.dumps(LEGACY_ENVELOPE).encode(), key=b"A", partition=0)
    producer.send(topic, value=LEGACY_ENVELOPE, partition=0)
    producer.send(topic, value={"order": 1, "audit": {"eventId": "x"}}, partition=0)
    producer.send(topic, value={"event_type": "click", "user": 7}, partition=0)
    producer.send(topic, value=b'{"eventId": "app-1", "amount": 3}', partition=0)
    producer.flush()
    records = read_back(bootstrap, topic, 5)
    spans = span_exporter.get_finished_spans()
    for record, span in zip(records[:2], spans[:2], strict=True):
        assert [name for name, _ in record.headers] == ["traceparent"]
        assert dict(record.headers)["traceparent"] == format_traceparent(
            span.context.trace_id, span.context.span_id, span.context.trace_flags).encode()
        event = decode_record(record.headers, record.value)
        assert (event.envelope, event.id, event.type, event.source, event.correlation_id,
                event.causation_id, event.schema_version, event.data, event.problems) == (
            "json_envelope", "evt-123", "price.changed", "pricing", "corr-9", "evt-100", "2",
            {"sku": "A"}, [])
        assert (span.attributes[semconv.MESSAGING_MESSAGE_ID],
                span.attributes[semconv.CLOUDEVENTS_EVENT_TYPE]) == ("evt-123", "price.changed")
    # a payload with one key that could name an event (its type, its id) is data too
    for record in records[2:]:
        plain = dict(record.headers)
        assert plain["ce_type"] == topic.encode() and plain["ce_source"] == b"orders"
        event = decode_record(record.headers, record.value)
        assert (event.envelope, event.problems) == (
            "binary", [f"type_not_past_tense: {topic}"])  # the topic names it
    assert decode_record(records[3].headers, records[3].value).data == {
        "event_type": "click", "user": 7}


def test_a_cloudevents_structured_record_keeps_its_identity(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """What the CloudEvents SDK writes in structured mode, sent through our producer, the
    SDK still reads as the same event (no ce_* header beside its envelope); a traceparent in
    the envelope parents our span and stays the record's only trace context."""
    from cloudevents.core.bindings.kafka import KafkaMessage, from_structured, to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    attributes = {"id": "sdk-2", "source": "legacy-sdk", "type": "thing.happened",
                  "specversion": "1.0", "subject": "s2", "correlationid": "corr-2"}
    plain = to_structured(CloudEvent(attributes=attributes, data={"b": 2}), JSONFormat())
    traced = to_structured(CloudEvent(attributes={**attributes, "id": "sdk-3",
                                                  "traceparent": CALLER_TRACEPARENT},
                                      data={"b": 3}), JSONFormat())
    for message in (plain, traced):
        producer.send(topic, value=message.value, headers=list(message.headers.items()),
                      partition=0)
    producer.flush()
    first, second = read_back(bootstrap, topic, 2)
    assert [n for n, _ in first.headers] == ["content-type", "traceparent"]
    assert [n for n, _ in second.headers] == ["content-type"]
    for record, wanted in ((first, "sdk-2"), (second, "sdk-3")):
        got = from_structured(KafkaMessage(headers=dict(record.headers), key=record.key,
                                           value=record.value), JSONFormat())
        assert (got.get_id(), got.get_type(), got.get_data()) == (
            wanted, "thing.happened", {"b": 2 if wanted == "sdk-2" else 3})
    by_id = {s.attributes[semconv.MESSAGING_MESSAGE_ID]: s for s in
             span_exporter.get_finished_spans()}
    assert sorted(by_id) == ["sdk-2", "sdk-3"]
    assert by_id["sdk-3"].parent.span_id == 0xB7AD6B7169203331


def test_a_header_name_in_bytes_gets_kafka_pythons_own_error(
    producer: TracedProducer, topic: str
) -> None:
    """kafka-python takes header names as str only: a bytes one fails with its message, not
    with an error from our reading of the caller's headers."""
    with pytest.raises(TypeError, match=r"All headers items must be \(str, bytes\) tuples"):
        producer.send(topic, value=b"{}", headers=[(b"ce_type", b"x")])


def test_plain_send_types_the_event_by_topic_and_subjects_it_by_key(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """Without a ce_type header the type is the topic name; the key is the subject."""
    producer.send(topic, value=b"{}", key=b"ord_5").get(10)
    [record] = read_back(bootstrap, topic, 1)
    headers = dict(record.headers)
    assert headers["ce_type"] == topic.encode()
    assert headers["ce_subject"] == b"ord_5"
    assert headers["ce_source"] == b"orders"


def test_a_send_with_timestamp_ms_has_that_time_as_its_ce_time(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """`timestamp_ms` (a backfilled or replayed record) is the event's time too, unless the
    caller's own ce_time header says otherwise; a bad one is left to kafka-python."""
    producer.send(topic, value=b"{}", partition=0, timestamp_ms=1_600_000_000_123).get(10)
    producer.send(topic, value=b"{}", partition=0, timestamp_ms=1_600_000_000_123,
                  headers=[("ce_time", b"2020-01-01T00:00:00Z")]).get(10)
    first, second = read_back(bootstrap, topic, 2)
    assert (first.timestamp, dict(first.headers)["ce_time"]) == (
        1_600_000_000_123, b"2020-09-13T12:26:40.123Z")
    assert dict(second.headers)["ce_time"] == b"2020-01-01T00:00:00Z"
    with pytest.raises(TypeError):  # kafka-python's own check of the type
        producer.send(topic, value=b"{}", timestamp_ms="soon")  # type: ignore[arg-type]


def test_dict_and_list_values_go_as_compact_json(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """A dict or list value is JSON-encoded, and JSON declares no content-type."""
    producer.send(topic, value={"a": 1, "b": [1, 2]}, partition=0)
    producer.send(topic, value=[1, "x"], partition=0)
    producer.flush()
    records = read_back(bootstrap, topic, 2)
    assert [r.value for r in records] == [b'{"a":1,"b":[1,2]}', b'[1,"x"]']
    assert all("content-type" not in dict(r.headers) for r in records)


def test_json_bytes_of_any_kind_are_sent_as_json(
        producer: TracedProducer, bootstrap: str, topic: str) -> None:
    """JSON bytes that are no object or array (a number, a string, a literal, an object after
    whitespace) get no content type, as DESIGN says for JSON data and as the same bytes from
    a value_serializer get; only bytes that are not JSON (NaN included) are octet-stream."""
    values = [b"42", b'"ord_1"', b"true", b' {"a": 1}', b'\n{"a":1}', b"NaN", b"hello"]
    for value in values:
        producer.send(topic, value=value, partition=0)
    producer.flush()
    records = read_back(bootstrap, topic, len(values))
    assert [(r.value, dict(r.headers).get("content-type")) for r in records] == [
        (v, None) for v in values[:5]] + [
        (b"NaN", b"application/octet-stream"), (b"hello", b"application/octet-stream")]


def test_bytes_go_as_they_are(producer: TracedProducer, bootstrap: str, topic: str) -> None:
    """Bytes are not re-encoded; non-JSON-looking bytes are declared application/octet-stream."""
    producer.send(topic, value=b"\x00\xffraw", partition=0)
    producer.send(topic, value=b'{"x":1}', partition=0)
    producer.flush()
    raw, js = read_back(bootstrap, topic, 2)
    assert raw.value == b"\x00\xffraw"
    assert dict(raw.headers)["content-type"] == b"application/octet-stream"
    assert js.value == b'{"x":1}'
    assert "content-type" not in dict(js.headers)


def test_a_value_serializer_gets_values_untouched(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """With the producer's own value_serializer, dicts reach it as dicts, not as JSON bytes."""
    seen: list[Any] = []

    class Recording(Serializer):
        def serialize(self, topic: str, headers: Any, data: Any) -> bytes:
            seen.append(data)
            return repr(data).encode()

    raw = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=Recording())
    producer = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    try:
        producer.send(topic, value={"a": 1}).get(10)
        producer.publish(topic, "order.placed", {"b": 2})
        producer.flush()
    finally:
        raw.close(timeout=5)
    assert seen == [{"a": 1}, {"b": 2}]


@pytest.mark.filterwarnings("ignore:value_serializer does not implement")
def test_a_value_its_serializer_made_other_than_json_declares_its_content_type(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """A producer whose value_serializer makes text (or other bytes) from the caller's
    objects: our sends of a value that is not JSON carry the content-type saying what it
    is, as a value we encode ourselves does, and the collector's decoder finds no problem;
    JSON (an object, or a JSON string) carries none; a send made without Choreoscope on the
    same producer is left as it was."""
    from choreoscope.instrumentation.decoder import decode_record

    def serialize(value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        return value.encode() if isinstance(value, str) else json.dumps(value).encode()

    raw = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=serialize)
    traced = instrument_producer(raw, service="greeter", tracer_provider=tracer_provider)
    again = instrument_producer(raw, service="greeter", tracer_provider=tracer_provider)
    try:
        traced.send(topic, "hello wörld", partition=0).get(10)
        traced.publish(topic, "greeting.sent", "hi there")
        again.send(topic, {"a": 1}, partition=0).get(10)
        traced.send(topic, '"quoted"', partition=0).get(10)
        traced.send(topic, b"\x00\xff", partition=0).get(10)
        raw.send(topic, "bare", partition=0).get(10)
        traced.flush()
    finally:
        raw.close(timeout=5)
    records = sorted(read_back(bootstrap, topic, 6), key=lambda r: r.offset)
    assert [dict(r.headers).get("content-type") for r in records] == [
        b"text/plain; charset=utf-8", b"text/plain; charset=utf-8", None, None,
        b"application/octet-stream", None]
    assert [h for h, _ in records[0].headers].count("content-type") == 1
    decoded = [decode_record(r.headers, r.value, topic=topic) for r in records[:5]]
    assert [(e.data, e.problems) for e in decoded] == [
        ("hello wörld", []), ("hi there", []), ({"a": 1}, []), ("quoted", []),
        (b"\x00\xff", [])]


def test_records_are_valid_cloudevents_for_the_reference_sdk(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """The CloudEvents SDK's Kafka binding reads what we write, attributes and data."""
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    event = producer.publish(topic, "order.placed", {"total": 42}, key="ord_1", sequence=7)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    ce = from_binary(message, JSONFormat(), CloudEvent)
    assert (ce.get_id(), ce.get_type(), ce.get_source(), ce.get_subject()) == (
        event.id,
        "order.placed",
        "orders",
        "ord_1",
    )
    assert ce.get_specversion() == "1.0"
    assert ce.get_data() == {"total": 42}
    assert ce.get_extension("correlationid") == event.id
    assert ce.get_extension("schemaversion") == "1"
    assert ce.get_time() is not None


def test_send_event_uses_a_stored_traceparent_as_parent(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """`send_event` sends the given Event, parented on a traceparent string, with extra attributes."""
    event = Event(
        id="row-1",
        type="order.placed",
        source=None,
        correlation_id="flow-9",
        schema_version="1",
        time="2026-01-01T00:00:00Z",
    )
    future = producer.send_event(
        topic,
        event,
        b'{"a":1}',
        key=b"agg-1",
        parent_context=CALLER_TRACEPARENT,
        extra_attributes={semconv.OUTBOX_DELAY_MS: 12},
    )
    future.get(10)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    headers = dict(record.headers)
    assert (headers["ce_id"], headers["ce_source"], headers["ce_time"]) == (
        b"row-1",
        b"orders",
        b"2026-01-01T00:00:00Z",
    )
    [span] = span_exporter.get_finished_spans()
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert dict(span.attributes)[semconv.OUTBOX_DELAY_MS] == 12
    assert headers["traceparent"] == traceparent_of(span).encode()


def test_a_parent_tracestate_travels_in_the_tracestate_header(
    producer: TracedProducer, bootstrap: str, topic: str, span_exporter: InMemorySpanExporter
) -> None:
    """The vendor trace state of the parent is written as `tracestate` after `traceparent`."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "opaque")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    event = Event(id="e-ts", type="order.placed", source=None, schema_version="1")
    producer.send_event(topic, event, b"{}", parent_context=parent)
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    [span] = span_exporter.get_finished_spans()
    assert record.headers[-2:] == [
        ("traceparent", traceparent_of(span).encode()),
        ("tracestate", b"vendor=opaque"),
    ]
    assert (event.traceparent, event.tracestate) == (traceparent_of(span), "vendor=opaque")


# -- failures ------------------------------------------------------------------------------


def test_a_record_too_large_raises_and_marks_the_span_error(
    bootstrap: str,
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """MessageSizeTooLargeError still reaches the caller; the span is ERROR with error.type."""
    raw = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=2000)
    producer = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            producer.publish(topic, "order.placed", {"blob": "x" * 5000})
    finally:
        raw.close(timeout=5)
    [span] = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes)[semconv.ERROR_TYPE] == "MessageSizeTooLargeError"
    assert [e.name for e in span.events] == ["exception"]


def test_a_failed_delivery_fails_the_future_and_marks_the_span_error(
    topic: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Broker gone: the send's future fails as without us, a publish is logged, spans are ERROR."""
    from choreoscope.collector.broker import EmbeddedBroker

    with EmbeddedBroker() as own:
        raw = KafkaProducer(
            bootstrap_servers=own.bootstrap,
            request_timeout_ms=1000,
            delivery_timeout_ms=2000,
            linger_ms=0,
            retries=0,
        )
        producer = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
        producer.send(topic, value=b"{}", partition=0).get(10)
        own.stop()
        with caplog.at_level(logging.ERROR, logger="choreoscope.instrumentation"):
            future = producer.send(topic, value=b"{}", partition=0)
            lost = producer.publish(topic, "order.placed", {"n": 1}, key="k")
            with pytest.raises(KafkaError):
                future.get(20)
            spans = wait_for_spans(span_exporter, 3)
    raw.close(timeout=0.5)
    assert [s.status.status_code for s in spans[1:]] == [StatusCode.ERROR, StatusCode.ERROR]
    assert dict(spans[1].attributes)[semconv.ERROR_TYPE] == type(future.exception).__qualname__
    messages = [r.getMessage() for r in caplog.records if r.name == "choreoscope.instrumentation"]
    [logged] = [m for m in messages if lost.id in m]
    assert logged.startswith(
        f"choreoscope: publishing order.placed {lost.id} to {topic!r} failed: "
    )


class _BrokenTracerProvider(TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        class Broken:
            def start_span(self, *a: Any, **k: Any) -> Any:
                raise RuntimeError("tracing is broken")

        return Broken()


def test_a_broken_tracer_never_breaks_a_send(
    bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If starting the span fails, records still go out with their ce_* headers; logged once."""
    import choreoscope.instrumentation._deferred_span as deferred_span

    monkeypatch.setattr(deferred_span, "_failures_logged", set())
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    producer = instrument_producer(raw, service="orders", tracer_provider=_BrokenTracerProvider())
    try:
        with caplog.at_level(logging.ERROR, logger="choreoscope.instrumentation"):
            event = producer.publish(topic, "order.placed", {"a": 1}, key="k")
            producer.publish(topic, "order.placed", {"a": 2}, key="k")
            producer.flush()
    finally:
        raw.close(timeout=5)
    record, _ = read_back(bootstrap, topic, 2)
    assert dict(record.headers)["ce_id"] == event.id.encode()
    assert "traceparent" not in dict(record.headers)
    failures = [r for r in caplog.records if "could not start the producer span" in r.getMessage()]
    assert len(failures) == 1


# -- decorator -----------------------------------------------------------------------------


def test_traced_producer_publishes_the_return_value(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """The decorated call returns the Event; key and subject callables read the returned dict."""

    @traced_producer(
        producer, topic, "order.placed", key=lambda d: d["id"], subject=lambda d: f"ord_{d['id']}"
    )
    def place(n: int, *, note: str = "") -> dict[str, Any]:
        """Place an order."""
        return {"id": str(n), "note": note}

    event = place(7, note="hi")
    producer.flush()
    assert isinstance(event, Event)
    assert (event.type, event.subject, event.data) == (
        "order.placed",
        "ord_7",
        {"id": "7", "note": "hi"},
    )
    assert place.__name__ == "place" and place.__doc__ == "Place an order."
    assert str(inspect.signature(place)) == "(n: 'int', *, note: 'str' = '') -> 'dict[str, Any]'"
    [record] = read_back(bootstrap, topic, 1)
    assert (record.key, record.value) == (b"7", b'{"id":"7","note":"hi"}')


def test_traced_producer_takes_its_own_tracer_provider(
    producer: TracedProducer, span_exporter: InMemorySpanExporter, bootstrap: str, topic: str
) -> None:
    """`tracer_provider=` sends the decorated calls' spans there, through the same Kafka
    producer and source; the producer's other sends keep its own provider."""
    other = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(other))

    @traced_producer(producer, topic, "order.placed", key="k1", tracer_provider=provider)
    def place() -> dict[str, Any]:
        return {"n": 1}

    event = place()
    plain = producer.publish(topic, "order.placed", {"n": 2}, key="k2")
    producer.flush()
    provider.shutdown()
    assert [(s.name, s.attributes["messaging.message.id"]) for s in other.get_finished_spans()
            ] == [(f"send {topic}", event.id)]
    assert [s.attributes["messaging.message.id"] for s in span_exporter.get_finished_spans()
            ] == [plain.id]
    first, second = read_back(bootstrap, topic, 2)
    assert (dict(first.headers)["ce_source"], dict(first.headers)["ce_id"]) == (
        b"orders", event.id.encode())
    assert dict(second.headers)["ce_id"] == plain.id.encode()


def test_traced_producer_wraps_async_functions(producer: TracedProducer, topic: str) -> None:
    """An async function gives an async wrapper whose await returns the Event."""

    @traced_producer(producer, topic, "payment.captured", key="pay_1")
    async def capture() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"amount": 5}

    assert asyncio.iscoroutinefunction(capture)
    event = asyncio.run(capture())
    producer.flush()
    assert (event.type, event.subject, event.data) == ("payment.captured", "pay_1", {"amount": 5})


def test_traced_producer_rejects_misuse_loudly(producer: TracedProducer, topic: str) -> None:
    """A raw producer, a bad key, or a non-dict return raise UsageError saying expected/got."""
    with pytest.raises(UsageError, match=r"expected a TracedProducer .*, got KafkaProducer"):
        traced_producer(producer.wrapped, topic, "order.placed")
    with pytest.raises(UsageError, match="expected the key as"):
        traced_producer(producer, topic, "order.placed", key=42)  # type: ignore[arg-type]

    @traced_producer(producer, topic, "order.placed")
    def wrong() -> Any:
        return ["not", "a", "dict"]

    with pytest.raises(UsageError, match="to return a dict, got list") as info:
        wrong()
    assert isinstance(info.value, TypeError) and isinstance(info.value, ChoreoscopeError)


def test_instrument_producer_rejects_what_is_not_a_producer(bootstrap: str) -> None:
    """Instrumenting a non-producer or an instrumented one fails at once."""
    with pytest.raises(UsageError, match=r"expected a kafka\.KafkaProducer, got dict"):
        instrument_producer({}, service="orders")
    traced = instrument_producer(KafkaProducer(bootstrap_servers=bootstrap), service="orders")
    try:
        with pytest.raises(UsageError, match=r"got a TracedProducer \(already instrumented\)"):
            instrument_producer(traced, service="orders")
    finally:
        traced.close(timeout=5)


def test_a_traced_producer_works_in_a_with_statement(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """As kafka-python's own producer: `with` gives the traced producer and closes the
    wrapped one on the way out (what is queued is sent first)."""
    with instrument_producer(KafkaProducer(bootstrap_servers=bootstrap), service="orders",
                             tracer_provider=tracer_provider) as producer:
        assert isinstance(producer, TracedProducer)
        event = producer.publish(topic, "order.placed", {"n": 1}, key="k")
    assert producer.wrapped._closed
    [record] = read_back(bootstrap, topic, 1)
    assert dict(record.headers)["ce_id"] == event.id.encode()


def test_everything_else_passes_through(producer: TracedProducer, topic: str) -> None:
    """Attributes not defined by the wrapper come from the wrapped producer."""
    producer.publish(topic, "order.placed", {})
    producer.flush()
    assert producer.partitions_for(topic) == producer.wrapped.partitions_for(topic)
    assert producer.service == "orders"
    assert producer.config is producer.wrapped.config


# -- soft type validation ------------------------------------------------------------------


def test_a_non_past_tense_type_is_published_and_warned_once(
    producer: TracedProducer, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`order.place` goes out, with one warning however often it is used; past tense is quiet."""
    bad = f"order{uuid.uuid4().hex[:6]}.place"
    good = unique_type("order")
    with caplog.at_level(logging.WARNING, logger="choreoscope.instrumentation"):
        first = producer.publish(topic, bad, {})
        producer.publish(topic, bad, {})
        producer.publish(topic, good, {})
        producer.flush()
    warnings = [r for r in caplog.records if r.name == "choreoscope.instrumentation"]
    assert len(warnings) == 1
    assert bad in warnings[0].getMessage()
    assert first.type == bad


def test_publish_rejects_a_non_str_type(producer: TracedProducer, topic: str) -> None:
    """An event type that is not a non-empty str is a UsageError."""
    with pytest.raises(UsageError, match="expected the event type as a non-empty str, got 3"):
        producer.publish(topic, 3, {})  # type: ignore[arg-type]


def test_publish_rejects_what_it_cannot_send(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """A non-str subject, data JSON cannot hold (an object, NaN, an infinity), or no data and
    no key (a tombstone needs a key) are UsageErrors raised before anything is sent; send()
    refuses such a dict too."""
    with pytest.raises(UsageError, match="expected the subject as a str or None, got 5"):
        producer.publish(topic, "order.placed", {}, subject=5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot send a value of type object as JSON event data"):
        producer.publish(topic, "order.placed", {"x": object()})
    with pytest.raises(UsageError, match="cannot send a value of type object as JSON event data"):
        producer.send(topic, value={"x": object()})
    for not_json in (float("nan"), float("inf"), -float("inf")):  # no such JSON numbers
        with pytest.raises(UsageError, match="Out of range float values are not JSON"):
            producer.publish(topic, "reading.taken", {"temp": not_json})
        with pytest.raises(UsageError, match="instead of NaN or an infinity"):
            producer.send(topic, value={"temp": [not_json]})
    with pytest.raises(UsageError, match=r"tombstone .* only with a key"):
        producer.publish(topic, "order.deleted", None)
    producer.publish(topic, "order.deleted", None, key="ord_1")
    producer.flush()
    [record] = read_back(bootstrap, topic, 1)
    assert (record.key, record.value) == (b"ord_1", None)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    assert sum(consumer.end_offsets(parts).values()) == 1  # nothing else went out
    consumer.close()


def test_value_json_matches_wire_encoding(
    producer: TracedProducer, bootstrap: str, topic: str
) -> None:
    """publish and send encode the same dict to the same bytes."""
    data = {"b": 1, "a": "é"}
    producer.publish(topic, "order.placed", data)
    producer.send(topic, value=data)
    producer.flush()
    values = {r.value for r in read_back(bootstrap, topic, 2)}
    assert values == {json.dumps(data, separators=(",", ":")).encode()}


def test_the_shipped_fixture_captures_producer_spans(
    bootstrap: str,
    topic: str,
    captured_spans: CapturedSpans,  # noqa: F811
) -> None:
    """`testing.captured_spans` gives a provider whose spans land in its in-memory exporter."""
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    producer = instrument_producer(raw, service="orders", tracer_provider=captured_spans.provider)
    try:
        event = producer.publish(topic, "order.placed", {})
        producer.flush()
    finally:
        raw.close(timeout=5)
    [span] = captured_spans.exporter.get_finished_spans()
    assert dict(span.attributes)[semconv.MESSAGING_MESSAGE_ID] == event.id


@pytest.mark.filterwarnings("ignore:key_serializer does not implement")
def test_a_key_given_to_a_key_serializer_is_the_subject_as_text(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """An int or UUID key that the producer's key_serializer turns into bytes is the subject
    as its text, for send and publish alike; an object key is no subject (its repr is not
    the entity's name), nor is a bool (an int to isinstance, naming no entity)."""
    import uuid

    raw = KafkaProducer(bootstrap_servers=bootstrap,
                        key_serializer=lambda k: json.dumps(k, default=str).encode())
    traced = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    order = uuid.UUID("0190a0a0-0000-7000-8000-000000000001")
    traced.send(topic, value={"b": 2}, key=42, partition=0, headers=[("ce_type", b"item.added")])
    published = traced.publish(topic, "item.added", {"b": 3}, key=order)
    traced.send(topic, value={"b": 4}, key={"tenant": 1}, partition=0)
    flagged = traced.publish(topic, "item.flagged", {"b": 5}, key=True)
    traced.flush()
    raw.close(timeout=5)
    assert published.subject == str(order)
    assert flagged.subject is None
    records = read_back(bootstrap, topic, 4)
    subjects = sorted(dict(r.headers).get("ce_subject", b"-").decode() for r in records)
    assert subjects == sorted(["42", str(order), "-", "-"])


def test_a_key_of_binary_bytes_is_the_subject_as_hex(
    bootstrap: str, topic: str, tracer_provider: TracerProvider
) -> None:
    """Key bytes that are not printable UTF-8 text (a binary UUID, a hash) give their hex as
    the subject: decoded with replacement characters, b"\\xff\\x01" and b"\\xfe\\x01" were one
    subject, and their events were judged out of order against each other. Text keys stay
    text."""
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    traced = instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    binary = uuid.UUID("ffffffff-0000-7000-8000-000000000001").bytes
    sent = [traced.publish(topic, "item.added", {"n": 1}, key=b"\xff\x01"),
            traced.publish(topic, "item.added", {"n": 2}, key=b"\xfe\x01"),
            traced.publish(topic, "item.added", {"n": 3}, key=binary),
            traced.publish(topic, "item.added", {"n": 4}, key="ord_\u00e9".encode()),
            traced.publish(topic, "item.added", {"n": 5}, key=b"a\x00b")]
    traced.send(topic, value={"n": 6}, key=bytearray(b"\xfe\x02"), partition=0)
    traced.flush()
    raw.close(timeout=5)
    assert [e.subject for e in sent] == [
        "ff01", "fe01", "ffffffff000070008000000000000001", "ord_\u00e9", "610062"]
    records = read_back(bootstrap, topic, 6)
    subjects = sorted(dict(r.headers)["ce_subject"].decode() for r in records)
    assert subjects == sorted(["ff01", "fe01", binary.hex(), "ord_\u00e9", "610062", "fe02"])


def test_a_publish_aborted_with_its_transaction_is_not_logged_as_a_failure(
        bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    """A transactional producer's caller who aborts gets no ERROR line per publish: an
    abort is what they asked for. It is said once at INFO."""
    raw = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    try:
        raw.init_transactions()
        producer = instrument_producer(raw, service="orders")
        raw.begin_transaction()
        with caplog.at_level(logging.INFO, logger="choreoscope.instrumentation"):
            event = producer.publish(topic, "order.placed", {"n": 1}, key="k")
            raw.abort_transaction()
    finally:
        raw.close(timeout=5)
    ours = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "choreoscope.instrumentation"]
    assert ours == [("INFO", f"choreoscope: publishing order.placed {event.id} to {topic!r} "
                             "was aborted with its transaction")]
