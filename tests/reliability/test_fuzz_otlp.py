"""Property-based fuzzing of the OTLP/HTTP receiver: 200, 400, 413 or 415, never a 500, never a
dropped connection, and the receiver keeps storing good bodies afterwards."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import func, select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans
from choreoscope.collector.traces.receiver import OtlpReceiver

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
ALLOWED = {200, 400, 413, 415}
PROTOBUF, JSON = "application/x-protobuf", "application/json"
MAX_BODY = 64 * 1024


def _good_body(n: int = 3, trace: int = 1) -> bytes:
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=trace.to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
             name=f"process t{i}", kind=Span.SPAN_KIND_CONSUMER,
             start_time_unix_nano=1_700_000_000_000_000_000 + i,
             end_time_unix_nano=1_700_000_000_100_000_000 + i)
        for i in range(n)])])])
    return req.SerializeToString()


GOOD_JSON = {"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "shop"}}]},
    "scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "parentSpanId": "", "name": "send orders", "kind": 3,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
        "attributes": [{"key": "messaging.message.id", "value": {"stringValue": "ev-1"}}],
        "status": {"code": 0}}]}]}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(f"sqlite:///{tmp_path_factory.mktemp('otlp')}/fuzz.db").create()


@pytest.fixture(scope="module")
def receiver(store: Store) -> Iterator[OtlpReceiver]:
    r = OtlpReceiver(store, port=0, max_body=MAX_BODY).start()
    yield r
    r.stop()


def _post(receiver: OtlpReceiver, body: bytes, ctype: str, **headers: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": ctype, **headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _mutate(body: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(body)
    for pos, byte in edits:
        if out:
            out[pos % len(out)] = byte
    return bytes(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=25)
wrong = st.sampled_from([None, 1, -1, "x", "", [], {}, True, 1.5, "zz" * 20, "-1",
                         "99999999999999999999999999"])
SPAN_FIELDS = ["traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
               "endTimeUnixNano", "attributes", "status", "events", "links", "traceState"]


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([PROTOBUF, JSON]), st.booleans())
def test_random_bytes(receiver, body, ctype, zipped) -> None:
    """Random bytes, plain or gzipped, as protobuf or JSON get an allowed status."""
    extra = {"Content-Encoding": "gzip"} if zipped else {}
    assert _post(receiver, gzip.compress(body) if zipped else body, ctype, **extra) in ALLOWED


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                max_size=8))
def test_mutated_protobuf(receiver, edits) -> None:
    """A valid ExportTraceServiceRequest with bytes flipped gets an allowed status."""
    assert _post(receiver, _mutate(_good_body(), edits), PROTOBUF) in ALLOWED


@FUZZ
@given(json_values)
def test_arbitrary_json(receiver, doc) -> None:
    """Any JSON document, including deep ones, gets an allowed status."""
    assert _post(receiver, json.dumps(doc).encode(), JSON) in ALLOWED


@FUZZ
@given(st.sampled_from(SPAN_FIELDS), wrong)
def test_wrong_type_for_every_span_field(receiver, field, value) -> None:
    """A span field of the wrong type is rejected (200 with partial success, or 400)."""
    doc = json.loads(json.dumps(GOOD_JSON))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = value
    assert _post(receiver, json.dumps(doc).encode(), JSON) in {200, 400}


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deep_json(receiver, depth) -> None:
    """Deeply nested JSON (far past the recursion limit) is a 400 or 200, never a crash."""
    assert _post(receiver, b"[" * depth + b"]" * depth, JSON) in {200, 400, 413}
    nested = b'{"resourceSpans":' + b"[" * depth + b"]" * depth + b"}"
    assert _post(receiver, nested, JSON) in {200, 400, 413}


def test_oversized_and_gzip_bomb(receiver) -> None:
    """Bodies over the limit, raw or once inflated, get 413."""
    assert _post(receiver, b"\x00" * (MAX_BODY + 1), PROTOBUF) == 413
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 64))
    assert len(bomb) < MAX_BODY
    assert _post(receiver, bomb, PROTOBUF, **{"Content-Encoding": "gzip"}) == 413


def test_still_storing_after_the_fuzzing(receiver, store) -> None:
    """After all of the above, a good body is answered 200 and its spans are stored."""
    assert _post(receiver, _good_body(5, trace=0xFEED), PROTOBUF) == 200
    assert receiver.flush()
    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(spans)
                         .where(spans.c.trace_id == f"{0xFEED:032x}")).scalar()
    assert n == 5
