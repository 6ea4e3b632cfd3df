"""Spans no store or reader should choke on: lone surrogates, absurd times, NaN, cut gzip."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind
from sqlalchemy import select

from choreoscope.collector.query._convert import rfc3339_ms, rfc3339_us
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans as spans_table
from choreoscope.collector.traces.legacy import decode_legacy
from choreoscope.collector.traces.model import Span
from choreoscope.collector.traces.otlp import decode_json
from choreoscope.collector.traces.receiver import OtlpReceiver
from choreoscope.collector.traces.sink import SpanSink
from tests.collector.traces.jaeger_server import fixture
from tests.collector.traces.test_receiver import _as_protobuf, post, stored

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
BAD = "\ud800"  # a lone surrogate: legal as an OTLP/JSON escape, not encodable as UTF-8


def _attr(key: str, value: Any) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


def _span(i: int, **extra: Any) -> dict[str, Any]:
    return {"traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": f"span {i}", "kind": 5,
            "startTimeUnixNano": str(T0_NS + i * 1000), "endTimeUnixNano": str(T0_NS + i * 1000
                                                                              + 500_000),
            **extra}


def _body(*groups: tuple[str, list[dict[str, Any]]]) -> bytes:
    """An OTLP/JSON body, one resourceSpans per (service, spans); ensure_ascii writes a lone
    surrogate as the escape \\ud800, as any JSON encoder would."""
    return json.dumps({"resourceSpans": [
        {"resource": {"attributes": [_attr("service.name", service)]},
         "scopeSpans": [{"spans": spans}]} for service, spans in groups]}).encode()


# --- 1. lone surrogates --------------------------------------------------------------------

def _surrogate_body() -> bytes:
    bad = _span(501, name=f"process {BAD}orders",
                status={"code": 2, "message": f"failed {BAD}"},
                attributes=[_attr("error.type", f"Key{BAD}Error"),
                            _attr("messaging.message.id", f"evt-{BAD}"),
                            _attr("messaging.destination.name", f"orders{BAD}"),
                            _attr("messaging.consumer.group.name", f"billing{BAD}"),
                            _attr(f"key{BAD}", f"value{BAD}")],
                events=[{"name": f"ev{BAD}", "timeUnixNano": str(T0_NS),
                         "attributes": [_attr("x", BAD)]}],
                links=[{"traceId": f"{1:032x}", "spanId": f"{1:016x}",
                        "attributes": [_attr("why", BAD)]}])
    return _body(("billing", [_span(i) for i in range(1, 501)]), (f"svc{BAD}", [bad]))


def _check_surrogate_batch(store: Store, receiver: OtlpReceiver) -> None:
    status, _, body = post(receiver, _surrogate_body(), "application/json")
    assert (status, json.loads(body)) == (200, {})
    assert receiver.flush()
    rows = stored(store)
    assert len(rows) == 501
    assert [r["name"] for r in rows[:500]] == [f"span {i}" for i in range(1, 501)]
    bad = rows[500]
    assert {k: bad[k] for k in ("name", "service", "status", "status_message", "error_type",
                                "message_id", "destination", "consumer_group")} == {
        "name": "process \ufffdorders", "service": "svc\ufffd", "status": "error",
        "status_message": "failed \ufffd", "error_type": "Key\ufffdError",
        "message_id": "evt-\ufffd", "destination": "orders\ufffd",
        "consumer_group": "billing\ufffd"}
    assert json.loads(bad["attributes"]) == {
        "error.type": "Key\ufffdError", "messaging.message.id": "evt-\ufffd",
        "messaging.destination.name": "orders\ufffd",
        "messaging.consumer.group.name": "billing\ufffd", "key\ufffd": "value\ufffd"}
    assert json.loads(bad["events"]) == [
        {"name": "ev\ufffd", "time_us": T0_NS // 1000, "attributes": {"x": "\ufffd"}}]
    assert json.loads(bad["links"]) == [
        {"trace_id": f"{1:032x}", "span_id": f"{1:016x}", "attributes": {"why": "\ufffd"}}]
    assert (receiver.spans_received, receiver.spans_stored, receiver.spans_dropped) == (
        501, 501, 0)


def test_lone_surrogates_do_not_lose_the_batch_on_sqlite(store: Store,
                                                          receiver: OtlpReceiver) -> None:
    """500 good spans and one full of lone surrogates in one body: all 501 stored, U+FFFD."""
    _check_surrogate_batch(store, receiver)


@pytest.mark.postgres
def test_lone_surrogates_do_not_lose_the_batch_on_postgres(postgres_url: str) -> None:
    """The same body into PostgreSQL: all 501 stored, lone surrogates as U+FFFD."""
    store = Store(postgres_url).create()
    receiver = OtlpReceiver(store, port=0).start()
    try:
        _check_surrogate_batch(store, receiver)
    finally:
        receiver.stop()
        store.dispose()


class _RawSpan(Span):
    """A span whose row skips the model's cleaning (what a future bug could let through)."""

    raw: dict[str, Any]

    def row(self, *, origin: str, received_at_ms: int,
            redact: Callable[[str], bool] | None = None) -> dict[str, Any]:
        return {**super().row(origin=origin, received_at_ms=received_at_ms, redact=redact),
                **self.raw}


def _refused_rows() -> list[Span]:
    good = [Span(trace_id=f"{i:032x}", span_id=f"{i:016x}", name=f"s{i}", kind="consumer",
                 start_us=i) for i in range(1, 4)]
    text = _RawSpan(trace_id=f"{8:032x}", span_id=f"{8:016x}", name="raw", start_us=8)
    text.raw = {"name": f"raw{BAD}\x00", "attributes": '{"a": 1}'}
    huge = _RawSpan(trace_id=f"{9:032x}", span_id=f"{9:016x}", name="huge", kind="producer",
                    parent_span_id=f"{1:016x}", start_us=9, duration_us=5, status="error")
    huge.raw = {"partition": 2**70, "service": "billing"}
    return [*good, text, huge]


def _check_refused_rows(store: Store) -> None:
    assert SpanSink(store).export(_refused_rows(), origin="otlp", received_at_ms=7) == 5
    cols = ("span_id", "parent_span_id", "name", "kind", "service", "start_us", "duration_us",
            "status", "partition", "attributes", "origin", "received_at_ms")
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(
            select(*(spans_table.c[c] for c in cols)).order_by(spans_table.c.start_us))]
    assert rows == [
        (f"{1:016x}", None, "s1", "consumer", None, 1, 0, "unset", None, "{}", "otlp", 7),
        (f"{2:016x}", None, "s2", "consumer", None, 2, 0, "unset", None, "{}", "otlp", 7),
        (f"{3:016x}", None, "s3", "consumer", None, 3, 0, "unset", None, "{}", "otlp", 7),
        # text made valid UTF-8 without NUL
        (f"{8:016x}", None, "raw\ufffd\ufffd", "internal", None, 8, 0, "unset", None,
         '{"a": 1}', "otlp", 7),
        # nothing but its place in the trace
        (f"{9:016x}", f"{1:016x}", "", "producer", None, 9, 5, "error", None, "{}", "otlp", 7),
    ]


def test_refused_spans_are_stored_one_by_one_on_sqlite(store: Store) -> None:
    """A batch the database refuses is stored span by span: plainer rows for the bad ones."""
    _check_refused_rows(store)


@pytest.mark.postgres
def test_refused_spans_are_stored_one_by_one_on_postgres(postgres_url: str) -> None:
    """PostgreSQL aborts on the bad row; savepoints keep the others and the transaction."""
    store = Store(postgres_url).create()
    try:
        _check_refused_rows(store)
    finally:
        store.dispose()


@pytest.mark.parametrize("refused", [False, True])
def test_savepoints_stay_in_the_callers_transaction(store: Store, refused: bool) -> None:
    """The sink's savepoints commit nothing by themselves (pysqlite would commit on releasing
    one opened before its transaction): a caller's rollback undoes every span."""
    spans = _refused_rows() if refused else _refused_rows()[:3]
    sink = SpanSink(store)
    with pytest.raises(RuntimeError, match="caller fails"), store.engine.begin() as conn:
        assert sink.write(conn, spans, origin="otlp", received_at_ms=7) == len(spans)
        raise RuntimeError("caller fails")
    assert stored(store) == []


# --- 2. times no date can show -------------------------------------------------------------

def test_out_of_range_times_are_rejected_spans(store: Store, receiver: OtlpReceiver) -> None:
    """Times outside uint64 nanoseconds (start, end, event) reject their span, not the body."""
    spans = [_span(1),
             _span(2, startTimeUnixNano="9000000000000000000000"),
             _span(3, endTimeUnixNano="-1"),
             _span(4, events=[{"name": "e", "timeUnixNano": "18446744073709551616"}]),
             _span(5, startTimeUnixNano="18446744073709551615",
                   endTimeUnixNano="18446744073709551615")]
    status, _, body = post(receiver, _body(("billing", spans)), "application/json")
    assert status == 200
    assert json.loads(body) == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": (
        "expected a time in nanoseconds within uint64 (0..18446744073709551615), got "
        "'9000000000000000000000'; expected a time in nanoseconds within uint64 "
        "(0..18446744073709551615), got '-1'; expected a time in nanoseconds within uint64 "
        "(0..18446744073709551615), got '18446744073709551616'")}}
    assert receiver.flush()
    rows = stored(store)
    assert [(r["name"], r["start_us"], rfc3339_us(r["start_us"])) for r in rows] == [
        ("span 1", T0_NS // 1000 + 1, "2026-01-01T00:00:00.000001Z"),
        ("span 5", 18446744073709551, "2554-07-21T23:34:33.709551Z")]


@pytest.mark.parametrize(("message", "stored_as"), [
    (5, "5"), (["a", 1], '["a", 1]'), ({"why": "x"}, '{"why": "x"}'), (True, "true"),
    (False, None), (None, None), ("", None)])
def test_a_status_message_that_is_no_string_keeps_its_batch(
        store: Store, receiver: OtlpReceiver, message: Any, stored_as: str | None) -> None:
    """OTLP/JSON may carry a number or a list where the status message's string belongs: the
    span is stored with the value as text, and the good spans of its body with it (the span
    writer failed on it and dropped them all after answering 200)."""
    spans = [_span(i) for i in range(1, 51)] + [_span(51, status={"code": 2, "message": message})]
    status, _, body = post(receiver, _body(("billing", spans)), "application/json")
    assert (status, json.loads(body)) == (200, {})
    assert receiver.flush()
    rows = stored(store)
    assert len(rows) == 51
    assert (rows[50]["status"], rows[50]["status_message"]) == ("error", stored_as)
    assert (receiver.spans_received, receiver.spans_stored, receiver.spans_dropped) == (51, 51, 0)


def test_legacy_spans_with_out_of_range_times_are_skipped() -> None:
    """Jaeger's legacy model: a start or end after 9999-12-31, or negative, skips the span."""
    def legacy(span_id: int, start: int, duration: int = 5, log_at: int | None = None) -> dict:
        return {"traceID": "ab" * 16, "spanID": f"{span_id:016x}", "operationName": "op",
                "startTime": start, "duration": duration, "processID": "p1",
                "logs": [] if log_at is None else [{"timestamp": log_at, "fields": []}]}

    last = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
    body = {"data": [{"traceID": "ab" * 16, "processes": {"p1": {"serviceName": "svc"}},
                      "spans": [legacy(1, 1_000_000), legacy(2, 9 * 10**18), legacy(3, -1),
                                legacy(4, last - 5, 6), legacy(5, last - 5, 5),
                                legacy(6, 1, log_at=last + 1)]}]}
    spans = decode_legacy(body)
    assert [(s.span_id, s.start_us, s.duration_us) for s in spans] == [
        (f"{1:016x}", 1_000_000, 5), (f"{5:016x}", last - 5, 5)]
    assert rfc3339_us(spans[1].start_us + spans[1].duration_us) == "9999-12-31T23:59:59.999999Z"


def test_api_v3_spans_are_bounded_like_otlp() -> None:
    """Jaeger's api/v3 (OTLP/JSON) decodes through the same bound."""
    decoded = decode_json(json.loads(_body(("svc", [
        _span(1), _span(2, startTimeUnixNano="9000000000000000000000")]))))
    assert ([s.span_id for s in decoded.spans], decoded.rejected) == ([f"{1:016x}"], 1)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    (0, "1970-01-01T00:00:00.000Z"),
    (-1, "1969-12-31T23:59:59.999Z"),
    (1_764_135_314_123, "2025-11-26T05:35:14.123Z"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    (253_402_300_800_000, None),
    (9 * 10**18, None),
    (-62_135_596_800_001, None),
    (10**30, None),
])
def test_rfc3339_ms_never_raises(value: int | None, expected: str | None) -> None:
    """Stored times no date can show come out as None (the readers' "unknown"), never a crash."""
    assert rfc3339_ms(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    (1_764_135_314_123_456, "2025-11-26T05:35:14.123456Z"),
    (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
    (9 * 10**18, None),
    (-(2**63), None),
])
def test_rfc3339_us_never_raises(value: int | None, expected: str | None) -> None:
    """The span start time of a stored absurd span is None, not "year 287168 is out of range"."""
    assert rfc3339_us(value) == expected


# --- 3. NaN and infinities -----------------------------------------------------------------

def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_sdk_nan_and_infinity_attributes_are_stored_as_strings(store: Store,
                                                                receiver: OtlpReceiver) -> None:
    """float('nan') and infinities (attributes, events, links) are stored as valid JSON strings."""
    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint,
                                                                     timeout=10)))
    tracer = provider.get_tracer("choreoscope-test")
    with tracer.start_as_current_span("send orders", kind=SpanKind.PRODUCER) as producer:
        pass
    nan, inf = float("nan"), float("inf")
    with tracer.start_as_current_span(
            "process orders", kind=SpanKind.CONSUMER,
            links=[Link(producer.get_span_context(), {"w": inf})],
            attributes={"nan": nan, "inf": inf, "ninf": -inf, "ratio": 0.5,
                        "list": [1.5, nan, -inf]}) as span:
        span.add_event("e", {"x": nan, "y": 2.5})
    provider.shutdown()
    assert receiver.flush()
    row = next(r for r in stored(store) if r["name"] == "process orders")
    assert _strict(row["attributes"]) == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity",
                                          "ratio": 0.5, "list": [1.5, "NaN", "-Infinity"]}
    assert [ev["attributes"] for ev in _strict(row["events"])] == [{"x": "NaN", "y": 2.5}]
    assert [link["attributes"] for link in _strict(row["links"])] == [{"w": "Infinity"}]


def test_otlp_json_nan_double_values_are_stored_as_strings(store: Store,
                                                           receiver: OtlpReceiver) -> None:
    """OTLP/JSON {"doubleValue": "NaN"} (protobuf's JSON mapping) is stored as valid JSON."""
    attrs = [{"key": "a", "value": {"doubleValue": "NaN"}},
             {"key": "b", "value": {"doubleValue": "Infinity"}},
             {"key": "c", "value": {"doubleValue": "-Infinity"}},
             {"key": "d", "value": {"arrayValue": {"values": [{"doubleValue": "NaN"}]}}},
             {"key": "emoji \U0001f600", "value": {"doubleValue": 1.25}}]
    status, _, _ = post(receiver, _body(("svc", [_span(1, attributes=attrs)])),
                        "application/json")
    assert status == 200
    assert receiver.flush()
    [row] = stored(store)
    assert _strict(row["attributes"]) == {"a": "NaN", "b": "Infinity", "c": "-Infinity",
                                          "d": ["NaN"], "emoji \U0001f600": 1.25}


# --- 4. truncated gzip ---------------------------------------------------------------------

@pytest.mark.parametrize("cut", [8, 200])
@pytest.mark.parametrize("ctype", ["application/json", "application/x-protobuf"])
def test_truncated_gzip_body_gets_400(store: Store, receiver: OtlpReceiver, ctype: str,
                                      cut: int) -> None:
    """A gzip body cut short (its trailer, or more) is a 400 naming the truncation."""
    raw = fixture("otel_traces_01.json")
    payload = raw if ctype == "application/json" else _as_protobuf(raw)
    whole = gzip.compress(payload)
    status, rtype, body = post(receiver, whole[:-cut], ctype, **{"Content-Encoding": "gzip"})
    message = (f"malformed gzip body: truncated (the gzip stream stops after {len(whole) - cut} "
               "bytes, before its end)")
    if ctype == "application/json":
        assert (status, rtype, json.loads(body)) == (400, ctype, {"code": 3, "message": message})
    else:
        from google.rpc import status_pb2

        parsed = status_pb2.Status.FromString(body)
        assert (status, rtype, parsed.code, parsed.message) == (400, ctype, 3, message)
    status, _, body = post(receiver, whole, ctype, **{"Content-Encoding": "gzip"})
    assert status == 200
    if ctype == "application/x-protobuf":
        assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    assert receiver.flush()
    assert len(stored(store)) == 4
