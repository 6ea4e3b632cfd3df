"""The OTLP/HTTP receiver: the SDK's own exporter, JSON and gzip bodies, bad bodies, back-pressure."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import time

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans as spans_table
from choreoscope.collector.traces.receiver import DROPPED_META_KEY, OtlpReceiver
from tests.collector.traces.jaeger_server import fixture


def post(receiver: OtlpReceiver, body: bytes, ctype: str, path: str = "/v1/traces",
         **headers: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype, **headers})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def _as_protobuf(otlp_json: bytes) -> bytes:
    """OTLP/JSON (hex ids) as protobuf bytes, via protobuf's JSON mapping (base64 ids)."""
    def b64_ids(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                else:
                    b64_ids(value)
        elif isinstance(node, list):
            for item in node:
                b64_ids(item)

    data = json.loads(otlp_json)
    b64_ids(data)
    return json_format.ParseDict(data, ExportTraceServiceRequest()).SerializeToString()


def stored(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(spans_table).order_by(spans_table.c.start_us, spans_table.c.span_id))]


def _export_with_sdk(receiver: OtlpReceiver, compression: Compression) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, compression=compression, timeout=10)
    results: list[SpanExportResult] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
            results.append(exporter.export([span]))

    provider.add_span_processor(Recording(exporter))
    tracer = provider.get_tracer("choreoscope-test")
    send_attrs = {"messaging.message.id": "evt-1", "messaging.destination.name": "orders"}
    process_attrs = {"messaging.message.id": "evt-1", "messaging.kafka.offset": 9,
                     "messaging.consumer.group.name": "billing",
                     "messaging.destination.partition.id": "0"}
    with (tracer.start_as_current_span("send orders", kind=SpanKind.PRODUCER,
                                       attributes=send_attrs),
          tracer.start_as_current_span("process orders", kind=SpanKind.CONSUMER,
                                       attributes=process_attrs) as span):
        span.set_status(Status(StatusCode.ERROR, "declined"))
        span.set_attribute("error.type", "CardDeclined")
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_exporter_spans_arrive_exactly(store: Store, receiver: OtlpReceiver,
                                           compression: Compression) -> None:
    """Spans sent by the SDK's OTLPSpanExporter (plain and gzip) are stored as they were made."""
    _export_with_sdk(receiver, compression)
    assert receiver.flush()
    consumer, producer = sorted(stored(store), key=lambda r: r["kind"])
    assert consumer["trace_id"] == producer["trace_id"]
    assert consumer["parent_span_id"] == producer["span_id"]
    assert producer["parent_span_id"] is None
    assert {k: producer[k] for k in ("name", "kind", "service", "status", "message_id",
                                     "destination", "origin")} == {
        "name": "send orders", "kind": "producer", "service": "billing", "status": "unset",
        "message_id": "evt-1", "destination": "orders", "origin": "otlp"}
    assert {k: consumer[k] for k in ("name", "kind", "status", "status_message", "error_type",
                                     "consumer_group", "partition", "offset")} == {
        "name": "process orders", "kind": "consumer", "status": "error",
        "status_message": "declined", "error_type": "CardDeclined", "consumer_group": "billing",
        "partition": 0, "offset": 9}
    assert json.loads(consumer["attributes"]) == {
        "messaging.message.id": "evt-1", "messaging.kafka.offset": 9,
        "messaging.consumer.group.name": "billing", "messaging.destination.partition.id": "0",
        "error.type": "CardDeclined"}
    assert (receiver.spans_received, receiver.spans_stored, receiver.spans_dropped) == (2, 2, 0)


@pytest.mark.postgres
def test_sdk_exporter_into_postgres(postgres_url: str) -> None:
    """The receiver's writer thread stores into PostgreSQL just the same."""
    store = Store(postgres_url).create()
    receiver = OtlpReceiver(store, port=0).start()
    try:
        _export_with_sdk(receiver, Compression.Gzip)
        assert receiver.flush()
        assert sorted(r["name"] for r in stored(store)) == ["process orders", "send orders"]
    finally:
        receiver.stop()
        store.dispose()


@pytest.mark.parametrize(("name", "count"), [("otlp2jaeger-in.json", 1),
                                              ("otel_traces_01.json", 4)])
def test_json_fixture_bodies(store: Store, receiver: OtlpReceiver, name: str, count: int) -> None:
    """OTLP/JSON bodies from Jaeger's fixtures get 200 {} and their spans stored once."""
    status, ctype, body = post(receiver, fixture(name), "application/json")
    assert (status, ctype, json.loads(body)) == (200, "application/json", {})
    assert receiver.flush()
    assert len(stored(store)) == count


def test_gzip_json_body(store: Store, receiver: OtlpReceiver) -> None:
    """A gzip Content-Encoding is undone before decoding."""
    status, _, _ = post(receiver, gzip.compress(fixture("otel_traces_01.json")),
                        "application/json; charset=utf-8", **{"Content-Encoding": "gzip"})
    assert status == 200
    assert receiver.flush()
    assert [r["service"] for r in stored(store)] == ["service-x"] * 4


def test_garbage_gets_400_with_a_reason(store: Store, receiver: OtlpReceiver) -> None:
    """Malformed JSON, protobuf and gzip bodies get 400 and a google.rpc.Status reason."""
    status, ctype, body = post(receiver, b'{"resourceSpans": [', "application/json")
    assert (status, ctype) == (400, "application/json")
    reason = json.loads(body)
    assert reason["code"] == 3 and reason["message"].startswith("malformed OTLP JSON body: ")

    status, ctype, body = post(receiver, b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf")
    assert (status, ctype) == (400, "application/x-protobuf")
    parsed = status_pb2.Status.FromString(body)
    assert parsed.code == 3 and parsed.message.startswith("malformed OTLP protobuf body: ")

    status, _, body = post(receiver, b"not gzip", "application/json",
                           **{"Content-Encoding": "gzip"})
    assert status == 400 and json.loads(body)["message"].startswith("malformed gzip body")

    status, _, body = post(receiver, b"[1, 2]", "application/json")
    assert status == 400
    assert json.loads(body)["message"] == ("malformed OTLP JSON body: expected a JSON object "
                                           "with resourceSpans, got list")
    assert stored(store) == [] and receiver.spans_received == 0


def test_other_content_types_paths_and_methods(receiver: OtlpReceiver) -> None:
    """415 for other media types or encodings, 404 for other paths, 405 for GET."""
    assert post(receiver, b"{}", "text/plain")[0] == 415
    assert post(receiver, b"{}", "application/json", **{"Content-Encoding": "br"})[0] == 415
    assert post(receiver, b"{}", "application/json", path="/v1/metrics")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    conn.request("GET", "/v1/traces")
    assert conn.getresponse().status == 405
    conn.close()


def test_bodies_over_max_body_get_413(store: Store) -> None:
    """Bodies over max_body, raw or after gunzip, get 413 and are not stored."""
    receiver = OtlpReceiver(store, port=0, max_body=1024).start()
    try:
        status, _, body = post(receiver, b" " * 2048, "application/json")
        assert status == 413 and "over the limit of 1024" in json.loads(body)["message"]
        bomb = gzip.compress(b"{" + b" " * 100_000 + b"}")
        assert len(bomb) < 1024
        status, _, body = post(receiver, bomb, "application/json", **{"Content-Encoding": "gzip"})
        assert status == 413
        assert json.loads(body)["message"] == "decompressed body over the limit of 1024 bytes"
    finally:
        receiver.stop()
    assert stored(store) == []


def test_full_queue_drops_and_counts(store: Store) -> None:
    """Spans beyond the queue bound are dropped, reported as partial success and counted in meta."""
    receiver = OtlpReceiver(store, port=0, max_queue=3).start()
    try:
        status, _, body = post(receiver, fixture("otel_traces_01.json"), "application/json")
        assert status == 200
        assert json.loads(body) == {"partialSuccess": {
            "rejectedSpans": "1", "errorMessage": "1 spans dropped: receiver queue full"}}
        assert receiver.flush()
        status, ctype, body = post(receiver, _as_protobuf(fixture("otel_traces_01.json")),
                                   "application/x-protobuf")
        response = ExportTraceServiceResponse.FromString(body)
        assert (status, ctype) == (200, "application/x-protobuf")
        assert response.partial_success.rejected_spans == 1
        assert receiver.flush()
    finally:
        receiver.stop()
    assert (receiver.spans_received, receiver.spans_dropped) == (8, 2)
    assert store.get_meta(DROPPED_META_KEY) == "2"
    assert len(stored(store)) == 3


def test_rejected_spans_are_reported_as_partial_success(store: Store,
                                                        receiver: OtlpReceiver) -> None:
    """A span with a bad id is rejected with its reason; the rest of the body is stored."""
    body = json.loads(fixture("otel_traces_01.json"))
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "zz"
    status, _, raw = post(receiver, json.dumps(body).encode(), "application/json")
    assert status == 200
    assert json.loads(raw) == {"partialSuccess": {
        "rejectedSpans": "1", "errorMessage": "expected a 16-hex-digit span id, got 'zz'"}}
    assert receiver.flush()
    assert len(stored(store)) == 3


def test_binds_loopback_by_default(store: Store) -> None:
    """The default host is 127.0.0.1 and port 0 picks a free port."""
    receiver = OtlpReceiver(store, port=0)
    assert receiver.host == "127.0.0.1"
    receiver.start()
    try:
        assert receiver.port != 0
        assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}/v1/traces"
    finally:
        receiver.stop()


def test_store_failure_drops_and_counts_without_crashing(store: Store,
                                                         receiver: OtlpReceiver) -> None:
    """When spans cannot be stored they are counted as dropped; the receiver keeps answering."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE spans")
    assert post(receiver, fixture("otel_traces_01.json"), "application/json")[0] == 200
    assert receiver.flush()
    assert (receiver.spans_received, receiver.spans_stored, receiver.spans_dropped) == (4, 0, 4)
    assert store.get_meta(DROPPED_META_KEY) == "4"
    assert post(receiver, b"[]", "application/json")[0] == 400


def test_bad_content_length_gets_a_clear_error(receiver: OtlpReceiver) -> None:
    """A missing or negative Content-Length is refused instead of blocking on the body."""
    for header in (b"", b"Content-Length: -5\r\n"):
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\n" + header + b"\r\n")
            reply = sock.makefile("rb").read()
        status = int(reply.split(b" ", 2)[1])
        assert status == (411 if not header else 400)


def test_a_client_gone_mid_body_is_no_error(
        store: Store, receiver: OtlpReceiver, capfd: pytest.CaptureFixture[str]) -> None:
    """A body shorter than its Content-Length (the client closed) is not parsed, not answered
    and leaves no traceback; the receiver serves the next client."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        sock.shutdown(socket.SHUT_WR)
        assert sock.makefile("rb").read() == b""  # closed without an answer
    assert post(receiver, fixture("otel_traces_01.json"), "application/json")[0] == 200
    assert receiver.flush()
    assert len(stored(store)) == 4
    assert "Traceback" not in capfd.readouterr().err


def test_chunked_body(store: Store, receiver: OtlpReceiver) -> None:
    """A chunked request body is reassembled and stored."""
    raw = fixture("otel_traces_01.json")
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    conn.request("POST", "/v1/traces", body=iter([raw[:100], raw[100:5000], raw[5000:]]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert receiver.flush()
    assert len(stored(store)) == 4


@pytest.mark.parametrize(("size_line", "reason"), [
    (b"-5", b"expected a chunk size in hexadecimal, got b'-5'"),
    (b"-1", b"expected a chunk size in hexadecimal, got b'-1'"),
    (b"zz", b"expected a chunk size in hexadecimal, got b'zz'"),
    (b"2", b"a chunk of 2 bytes is not followed by a line end"),
])
def test_a_malformed_chunk_gets_400_at_once(receiver: OtlpReceiver, size_line: bytes,
                                            reason: bytes) -> None:
    """A chunk size that is negative or not hex, or a chunk longer than its size, is a 400
    naming the fault, answered at once (never a dropped connection or a wait for more)."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\n{}}\r\n0\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.split(b" ", 2)[1] == b"400"
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["message"] == (
        "malformed chunked body: " + reason.decode())
    assert post(receiver, fixture("otel_traces_01.json"), "application/json")[0] == 200


def test_a_gzip_body_of_several_members_is_read_whole(store: Store,
                                                      receiver: OtlpReceiver) -> None:
    """Concatenated gzip members (RFC 1952) inflate to their concatenation."""
    raw = fixture("otel_traces_01.json")
    status, _, _ = post(receiver, gzip.compress(raw[:700]) + gzip.compress(raw[700:]),
                        "application/json", **{"Content-Encoding": "gzip"})
    assert status == 200
    assert receiver.flush()
    assert len(stored(store)) == 4


def test_instrumentation_span_attributes_fill_the_columns(store: Store,
                                                           receiver: OtlpReceiver) -> None:
    """Spans carrying the instrumentation's own semconv attribute sets land in the right columns."""
    from choreoscope.instrumentation import semconv
    from choreoscope.instrumentation.event import Event

    event = Event(id="01890a5d-ac96-774b-bcce-b302099a8057", type="order.placed",
                  source="shop", subject="ord_1", correlation_id="corr-1", causation_id="c0",
                  schema_version="1", time="2026-01-01T00:00:00Z", sequence=3, data={},
                  topic="orders", partition=2, offset=41, key=b"ord_1")
    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("choreoscope")
    with tracer.start_as_current_span(semconv.send_span_name("orders"), kind=SpanKind.PRODUCER,
                                      attributes=semconv.send_attributes("orders", event, "ord_1")):
        pass
    with tracer.start_as_current_span(semconv.process_span_name("orders"),
                                      kind=SpanKind.CONSUMER,
                                      attributes=semconv.process_attributes(event, "billing",
                                                                            "billing-worker")) as s:
        s.set_attribute(semconv.OUT_OF_ORDER, True)
    provider.shutdown()
    assert receiver.flush()
    rows = {r["kind"]: r for r in stored(store)}
    cols = ("name", "message_id", "conversation_id", "consumer_group", "destination",
            "partition", "offset", "out_of_order")
    assert {k: rows["consumer"][k] for k in cols} == {
        "name": "process orders", "message_id": event.id, "conversation_id": "corr-1",
        "consumer_group": "billing", "destination": "orders", "partition": 2, "offset": 41,
        "out_of_order": True}
    assert {k: rows["producer"][k] for k in cols} == {
        "name": "send orders", "message_id": event.id, "conversation_id": "corr-1",
        "consumer_group": None, "destination": "orders", "partition": None, "offset": None,
        "out_of_order": False}
    # the handler's traced_consumer(service=...) names the consumer; the process names the rest
    assert (rows["consumer"]["service"], rows["producer"]["service"]) == (
        "billing-worker", "billing")


def test_span_attributes_matching_the_pattern_are_redacted(store: Store) -> None:
    """With a redactor, attribute values of the span, its events and links whose key matches
    are stored as "[REDACTED]"; the others and the columns filled from attributes are kept."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    from choreoscope.collector.ingest.redact import Redactor

    receiver = OtlpReceiver(store, port=0, redactor=Redactor(r"email|^api_key$")).start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=receiver.endpoint, timeout=10)))
        linked = SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(1))
        with provider.get_tracer("t").start_as_current_span(
                "process orders", kind=SpanKind.CONSUMER,
                links=[Link(linked, {"customer.email": "a@b.c", "n": 1})],
                attributes={"messaging.message.id": "ev-1", "user.Email": "a@b.c",
                            "api_key": "k-123", "api_key_id": "kid-9", "order.total": 42.5}
        ) as span:
            span.add_event("retry", {"contact_email": "a@b.c", "attempt": 2})
        provider.shutdown()
        assert receiver.flush()
    finally:
        receiver.stop()
    [row] = stored(store)
    assert row["message_id"] == "ev-1"
    assert json.loads(row["attributes"]) == {
        "messaging.message.id": "ev-1", "user.Email": "[REDACTED]", "api_key": "[REDACTED]",
        "api_key_id": "kid-9", "order.total": 42.5}
    [event] = json.loads(row["events"])
    assert (event["name"], event["attributes"]) == (
        "retry", {"contact_email": "[REDACTED]", "attempt": 2})
    [link] = json.loads(row["links"])
    assert link["attributes"] == {"customer.email": "[REDACTED]", "n": 1}
    assert "a@b.c" not in json.dumps(row) and "k-123" not in json.dumps(row)


def test_nested_kvlist_attributes_are_redacted_at_any_depth(store: Store) -> None:
    """Keys inside kvlist values (and kvlists inside arrays) are redacted like payload keys:
    `db.password` nested as {"db": {"password": ...}} was stored in clear."""
    from choreoscope.collector.ingest.redact import Redactor

    def kv(key: str, value: dict) -> dict:
        return {"key": key, "value": value}

    def text(value: str) -> dict:
        return {"stringValue": value}

    attributes = [
        kv("db", {"kvlistValue": {"values": [kv("password", text("pw2")), kv("host", text("h")),
                                              kv("opts", {"kvlistValue": {"values": [
                                                  kv("secret", text("s3"))]}})]}}),
        kv("users", {"arrayValue": {"values": [
            {"kvlistValue": {"values": [kv("name", text("ann")), kv("token", text("t0k"))]}},
            text("plain")]}}),
        kv("password", text("pw1"))]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "q", "kind": 3,
        "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225600000500000",
        "attributes": attributes,
        "events": [{"name": "e", "timeUnixNano": "1767225600000000000",
                    "attributes": [kv("conn", {"kvlistValue": {"values": [
                        kv("password", text("pw3"))]}})]}]}]}]}]}).encode()
    receiver = OtlpReceiver(store, port=0, redactor=Redactor(r"password|secret|token")).start()
    try:
        assert post(receiver, body, "application/json")[0] == 200
        assert receiver.flush()
    finally:
        receiver.stop()
    [row] = stored(store)
    assert json.loads(row["attributes"]) == {
        "db": {"password": "[REDACTED]", "host": "h", "opts": {"secret": "[REDACTED]"}},
        "users": [{"name": "ann", "token": "[REDACTED]"}, "plain"], "password": "[REDACTED]"}
    assert json.loads(row["events"])[0]["attributes"] == {"conn": {"password": "[REDACTED]"}}


def test_mangled_bodies_always_get_an_answer(receiver: OtlpReceiver) -> None:
    """Mangled TracesData gets 200 (with rejected spans) or 400, never a dropped connection."""
    from tests.collector.traces.test_otlp import mutations

    statuses = set()
    for doc in mutations(json.loads(fixture("otel_traces_01.json")), 60, seed=11):
        status, _, _ = post(receiver, json.dumps(doc).encode(), "application/json")
        statuses.add(status)
    assert statuses == {200, 400}


def test_concurrent_bodies_are_bounded(store: Store) -> None:
    """With every slot held by a stalled upload, the next request gets a retryable 503."""
    receiver = OtlpReceiver(store, port=0, max_concurrent=1, busy_timeout_s=0.2).start()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as stalled:
            stalled.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            deadline = time.monotonic() + 10
            status = None
            while status != 503 and time.monotonic() < deadline:
                status, _, body = post(receiver, fixture("otlp2jaeger-in.json"),
                                       "application/json")
            assert status == 503
            assert json.loads(body) == {"code": 14, "message": "receiver busy: 1 requests in "
                                                               "progress, retry later"}
        status = None
        deadline = time.monotonic() + 10
        while status != 200 and time.monotonic() < deadline:
            status = post(receiver, fixture("otlp2jaeger-in.json"), "application/json")[0]
        assert status == 200
    finally:
        receiver.stop()
