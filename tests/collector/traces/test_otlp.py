"""OTLP TracesData (SDK-encoded protobuf, OTLP/JSON, protobuf's JSON mapping) -> normalised spans."""

from __future__ import annotations

import copy
import json
import random

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from choreoscope.collector.traces.model import SpanFormatError, normalize_id
from choreoscope.collector.traces.otlp import decode_json, decode_protobuf
from tests.collector.traces.jaeger_server import fixture


def _sdk_spans(tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter) -> list:
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("send orders", kind=SpanKind.PRODUCER,
                                      attributes={"messaging.message.id": "evt-1"}) as parent:
        pass
    with tracer.start_as_current_span(
        "process orders", context=None, kind=SpanKind.CONSUMER,
        links=[Link(parent.get_span_context(), {"why": "ambient"})],
        attributes={"messaging.system": "kafka", "messaging.message.id": "evt-1",
                    "messaging.consumer.group.name": "billing",
                    "messaging.destination.name": "orders",
                    "messaging.destination.partition.id": "2", "messaging.kafka.offset": 17,
                    "choreoscope.out_of_order": True, "ratio": 0.5, "tags": ["a", "b"]},
    ) as span:
        span.add_event("choreoscope.out_of_order", {"expected": 3})
        span.record_exception(KeyError("sku"))
        span.set_status(Status(StatusCode.ERROR, "handler failed"))
    return span_exporter.get_finished_spans()


def test_sdk_protobuf_spans_decode_exactly(tracer_provider: TracerProvider,
                                           span_exporter: InMemorySpanExporter) -> None:
    """Spans encoded by the SDK's own OTLP encoder come back with ids, kinds, attributes, status."""
    sdk = _sdk_spans(tracer_provider, span_exporter)
    decoded = decode_protobuf(encode_spans(sdk).SerializeToString())
    assert decoded.rejected == 0
    producer, consumer = decoded.spans
    ctx = sdk[1].get_span_context()
    assert (consumer.trace_id, consumer.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert consumer.parent_span_id is None and producer.kind == "producer"
    assert (consumer.name, consumer.kind, consumer.status, consumer.status_message) == (
        "process orders", "consumer", "error", "handler failed")
    assert consumer.service == sdk[1].resource.attributes["service.name"]
    assert consumer.start_us == sdk[1].start_time // 1000
    assert consumer.duration_us == (sdk[1].end_time - sdk[1].start_time) // 1000
    assert consumer.attributes == {
        "messaging.system": "kafka", "messaging.message.id": "evt-1",
        "messaging.consumer.group.name": "billing", "messaging.destination.name": "orders",
        "messaging.destination.partition.id": "2", "messaging.kafka.offset": 17,
        "choreoscope.out_of_order": True, "ratio": 0.5, "tags": ["a", "b"]}
    assert consumer.links == [{"trace_id": producer.trace_id, "span_id": producer.span_id,
                               "attributes": {"why": "ambient"}}]
    assert [e["name"] for e in consumer.events] == ["choreoscope.out_of_order", "exception"]
    assert consumer.events[0]["attributes"] == {"expected": 3}
    row = consumer.row(origin="otlp", received_at_ms=5)
    assert {k: row[k] for k in ("message_id", "consumer_group", "destination", "partition",
                                "offset", "out_of_order", "error_type")} == {
        "message_id": "evt-1", "consumer_group": "billing", "destination": "orders",
        "partition": 2, "offset": 17, "out_of_order": True, "error_type": "KeyError"}


def test_protobuf_json_mapping_matches_protobuf(tracer_provider: TracerProvider,
                                                span_exporter: InMemorySpanExporter) -> None:
    """protobuf's canonical JSON (base64 ids, enum names, int64 strings) decodes like the bytes."""
    request = encode_spans(_sdk_spans(tracer_provider, span_exporter))
    as_json = json.loads(json_format.MessageToJson(request))
    assert as_json["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["kind"] == "SPAN_KIND_CONSUMER"
    assert decode_json(as_json).spans == decode_protobuf(request.SerializeToString()).spans


def test_otel_traces_fixture_first_span() -> None:
    """otel_traces_01.json: hex ids, int64 strings, bytes, doubles, events, links, status 2."""
    decoded = decode_json(json.loads(fixture("otel_traces_01.json")))
    assert [s.kind for s in decoded.spans] == ["server", "client", "producer", "consumer"]
    first = decoded.spans[0]
    assert first.row(origin="otlp", received_at_ms=7) == {
        "trace_id": "00000000000000010000000000000000", "span_id": "0000000000000002",
        "parent_span_id": "0000000000000003", "name": "test-general-conversion-2",
        "kind": "server", "service": "service-x", "start_us": 1485467191639875,
        "duration_us": 5, "status": "error", "status_message": None, "error_type": None,
        "message_id": None, "conversation_id": None, "consumer_group": None,
        "destination": None, "partition": None, "offset": None, "out_of_order": False,
        "attributes": json.dumps({"blob": "AAAwOQ==", "peer.ipv4": 23456,
                                  "peer.service": "service-y", "temperature": 72.5},
                                 sort_keys=True),
        "links": json.dumps([
            {"attributes": {"opentracing.ref_type": "follows_from"},
             "span_id": "0000000000000004", "trace_id": "00000000000000010000000000000000"},
            {"attributes": {"opentracing.ref_type": "child_of"},
             "span_id": "00000000000000ff", "trace_id": "00000000000000ff0000000000000000"}],
            sort_keys=True),
        "events": json.dumps([
            {"attributes": {"event-x": "event-y"}, "name": "testing-event",
             "time_us": 1485467191639875},
            {"attributes": {"x": "y"}, "name": "", "time_us": 1485467191639875}],
            sort_keys=True),
        "origin": "otlp", "received_at_ms": 7,
    }


def test_span_with_bad_ids_is_rejected_not_the_batch() -> None:
    """A span with an unusable id is counted as rejected with its reason; the others are kept."""
    body = json.loads(fixture("otlp2jaeger-in.json"))
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["traceId"] = "not-hex"
    spans[1]["spanId"] = "0000000000000000"
    spans.append({"traceId": "83a9efd15c1c98a977e0711cc93ee28b", "spanId": "00000000000000aa",
                  "parentSpanId": "0000000000000000", "name": "root"})
    decoded = decode_json(body)
    assert decoded.rejected == 2
    assert decoded.reasons == ["expected a 32-hex-digit trace id, got 'not-hex'",
                               "expected a non-zero span id, got '0000000000000000'"]
    assert [(s.name, s.parent_span_id, s.kind, s.status) for s in decoded.spans] == [
        ("root", None, "internal", "unset")]


@pytest.mark.parametrize(("body", "message"), [
    ([], "expected a JSON object with resourceSpans, got list"),
    ({"resourceSpans": {}}, "expected resourceSpans to be a list, got dict"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "83a9efd15c1c98a977e0711cc93ee28b", "spanId": "e127af99e3b3e074",
         "attributes": {"a": 1}}]}]}]}, None),
    ({"resourceSpans": [{"scopeSpans": "x"}]}, "expected scopeSpans to be a list of objects"),
])
def test_json_that_is_not_traces_data(body: object, message: str | None) -> None:
    """Bodies that are not TracesData raise SpanFormatError; a bad attribute list rejects its span."""
    if message is None:
        decoded = decode_json(body)
        assert decoded.rejected == 1 and decoded.reasons == [
            "expected attributes to be a list, got dict"]
        return
    with pytest.raises(SpanFormatError, match=message):
        decode_json(body)


def test_protobuf_garbage_raises() -> None:
    """Bytes that are not an ExportTraceServiceRequest raise SpanFormatError."""
    with pytest.raises(SpanFormatError, match="expected an OTLP protobuf"):
        decode_protobuf(b"\x0a\xff\xff\xff\xff\x0f")


@pytest.mark.parametrize(("value", "size", "expected"), [
    (b"\x00" * 15 + b"\x01", 16, "00000000000000000000000000000001"),
    ("0000000000000001", 16, "00000000000000000000000000000001"),
    ("ABCDEF0123456789", 8, "abcdef0123456789"),
    ("q83vASNFZ4k=", 8, "abcdef0123456789"),
])
def test_normalize_id(value: object, size: int, expected: str) -> None:
    """Ids become lowercase hex: bytes, short legacy hex, upper case and base64 alike."""
    assert normalize_id(value, size) == expected


ODD_VALUES = [None, 1, -1, 2**70, "x", "", [], {}, [1], {"a": 1}, True, 1.5, "ff" * 8,
              {"code": "x"}, [{"key": 1}], [{"key": "k", "value": {"intValue": "zz"}}],
              [{"key": "k", "value": {"doubleValue": "abc"}}],
              [{"key": "k", "value": {"kvlistValue": {"values": 5}}}]]


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else [])
    for key, value in items:
        out += _paths(value, (*prefix, key))
    return out


def mutations(document: object, count: int, seed: int) -> list[object]:
    """Copies of `document` with one to three values replaced by odd ones (seeded)."""
    rng = random.Random(seed)
    paths = [p for p in _paths(document) if p]
    out = []
    for _ in range(count):
        doc = copy.deepcopy(document)
        for path in rng.sample(paths, rng.randint(1, 3)):
            node = doc
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = rng.choice(ODD_VALUES)
            except (KeyError, IndexError, TypeError):
                pass
        out.append(doc)
    return out


def test_odd_shapes_are_rejected_never_crash() -> None:
    """Five hundred mangled TracesData documents decode or raise SpanFormatError, nothing else."""
    outcomes = {"decoded": 0, "rejected_spans": 0, "refused": 0}
    for doc in mutations(json.loads(fixture("otel_traces_01.json")), 500, seed=7):
        try:
            decoded = decode_json(doc)
        except SpanFormatError:
            outcomes["refused"] += 1
            continue
        outcomes["decoded"] += 1
        outcomes["rejected_spans"] += decoded.rejected
        assert len(decoded.spans) + decoded.rejected <= 4
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0 and outcomes["rejected_spans"] > 0
