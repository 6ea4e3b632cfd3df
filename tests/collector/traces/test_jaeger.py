"""The Jaeger client against Jaeger's own response fixtures and its error shapes."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from choreoscope.collector.traces.jaeger import (
    JaegerClient,
    JaegerError,
    JaegerUnavailable,
    rfc3339,
)
from choreoscope.collector.traces.legacy import decode_legacy
from choreoscope.collector.traces.model import SpanFormatError
from tests.collector.traces.jaeger_server import (
    FIXTURES,
    NOT_FOUND_LEGACY,
    NOT_FOUND_V3,
    FakeJaeger,
    Reply,
    fixture,
)

# Every JSON file of ../shared/fixtures/jaeger, each served to the client by a test below.
SERVED = {"GetServices.json", "GetOperations.json", "GetTrace.json", "FindTraces.json",
          "FindTraceSummaries.json", "otlp2jaeger-in.json", "otlp2jaeger-out.json",
          "ui_01.json", "otel_traces_01.json", "getTrace-response.json"}


def use(name: str) -> bytes:
    assert name in SERVED
    return fixture(name)


def wrap_result(name: str) -> bytes:
    """An api/v3 body around a TracesData fixture, keeping the fixture's bytes."""
    return b'{"result":' + use(name) + b"}"


def test_get_services_fixture() -> None:
    """GetServices.json gives the service list."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=use("GetServices.json"))
        assert JaegerClient(jaeger.url).services() == ["foo"]


def test_services_leave_out_jaeger_itself() -> None:
    """Jaeger's own service is not searched."""
    body = json.loads(fixture("GetServices.json"))
    body["services"] += ["jaeger", "orders"]
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=json.dumps(body).encode())
        assert JaegerClient(jaeger.url).services() == ["foo", "orders"]


def test_get_operations_fixture() -> None:
    """GetOperations.json gives name and span kind, asked for with service and spanKind."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/operations"] = Reply(body=use("GetOperations.json"))
        ops = JaegerClient(jaeger.url).operations("foo", "server")
        assert ops == [{"name": "get_users", "span_kind": "server"}]
        assert parse_qs(urlsplit(jaeger.requests[0]).query) == {"service": ["foo"],
                                                                "spanKind": ["server"]}


def test_get_trace_fixture() -> None:
    """GetTrace.json: one server span with status ERROR and no times."""
    trace_id = "00000000000000000000000000000001"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{trace_id}"] = Reply(body=use("GetTrace.json"))
        client = JaegerClient(jaeger.url)
        (span,) = client.get_trace(trace_id)
        assert client.api_v3 is True
    assert (span.trace_id, span.span_id, span.name, span.kind, span.status) == (
        trace_id, "0000000000000002", "foobar", "server", "error")
    assert (span.parent_span_id, span.service, span.start_us, span.duration_us) == (
        None, None, 0, 0)


def test_find_traces_fixture_and_query() -> None:
    """FindTraces.json comes back grouped by trace id, asked for with the v3 query parameters."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/traces"] = Reply(body=use("FindTraces.json"))
        found = JaegerClient(jaeger.url).find_traces("foo", 1_700_000_000_000,
                                                     1_700_000_060_500, limit=20)
        query = parse_qs(urlsplit(jaeger.requests[0]).query)
    assert list(found) == ["00000000000000000000000000000001"]
    assert [s.span_id for s in found["00000000000000000000000000000001"]] == ["0000000000000002"]
    assert query == {
        "query.service_name": ["foo"],
        "query.start_time_min": ["2023-11-14T22:13:20.000000000Z"],
        "query.start_time_max": ["2023-11-14T22:14:20.500000000Z"],
        "query.num_traces": ["20"],
    }


def test_search_results_of_several_traces_are_grouped() -> None:
    """otel_traces_01.json holds two traces merged in one resourceSpans array."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/traces"] = Reply(body=wrap_result("otel_traces_01.json"))
        found = JaegerClient(jaeger.url).find_traces("service-x", 0, 1000)
    assert {tid: [(s.span_id, s.kind) for s in spans] for tid, spans in found.items()} == {
        "00000000000000010000000000000000": [("0000000000000002", "server"),
                                             ("0000000000000004", "producer")],
        "00000000000000020000000000000000": [("0000000000000003", "client"),
                                             ("0000000000000005", "consumer")],
    }


def test_trace_summaries_fixture() -> None:
    """FindTraceSummaries.json: uint64 nanosecond strings become microseconds."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/trace-summaries"] = Reply(body=use("FindTraceSummaries.json"))
        summaries = JaegerClient(jaeger.url).trace_summaries("frontend", 0, 1000)
    assert summaries == [{
        "trace_id": "00000000000000000000000000000001", "root_service": "frontend",
        "root_operation": "HTTP GET /", "span_count": 2, "error_span_count": 1,
        "start_us": 1_000_000_000, "end_us": 1_001_000_000, "services": ["frontend"],
    }]


def test_real_hotrod_trace_served_as_text_plain() -> None:
    """A real captured api/v3 trace (40 spans, 6 services, 3 errors) parses without a JSON content type."""
    trace_id = "2ea75461946a7dd10f2c15ab36a076cb"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{trace_id}"] = Reply(
            body=use("getTrace-response.json"), content_type="text/plain; charset=utf-8")
        spans = JaegerClient(jaeger.url).get_trace(trace_id.upper())
    assert len(spans) == 40
    assert {s.service for s in spans} == {"frontend", "customer", "mysql", "driver",
                                          "redis-manual", "route"}
    assert sorted({s.kind for s in spans}) == ["client", "server"]
    errors = [s for s in spans if s.status == "error"]
    assert [s.status_message for s in errors] == ["An error occurred"] * 3
    first = spans[0]
    assert (first.span_id, first.parent_span_id, first.name, first.start_us, first.duration_us) == (
        "9082d67808fc8870", "c8d93156b47cd010", "HTTP GET", 1782036644636668,
        (1782036644898226779 - 1782036644636668325) // 1000)
    assert first.attributes["http.response.status_code"] == 200


def test_otlp_transform_input_as_v3_trace() -> None:
    """otlp2jaeger-in.json served as a v3 trace: two identical spans of telemetrygen."""
    trace_id = "83a9efd15c1c98a977e0711cc93ee28b"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{trace_id}"] = Reply(body=wrap_result("otlp2jaeger-in.json"))
        spans = JaegerClient(jaeger.url).get_trace(trace_id)
    assert len(spans) == 2 and spans[0] == spans[1]
    assert (spans[0].service, spans[0].kind, spans[0].parent_span_id, spans[0].duration_us) == (
        "telemetrygen", "server", "909541b92cf05311", 123)
    assert spans[0].attributes == {"net.peer.ip": "1.2.3.4", "peer.service": "telemetrygen-client"}


def test_legacy_fallback_when_v3_route_is_missing() -> None:
    """An old Jaeger without api/v3 (plain 404) is read through /api/traces/{id}."""
    trace_id = "83a9efd15c1c98a977e0711cc93ee28b"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/traces/{trace_id}"] = Reply(body=use("otlp2jaeger-out.json"),
                                                         content_type=None)
        client = JaegerClient(jaeger.url)
        spans = client.get_trace(trace_id)
        assert client.api_v3 is False
        client.get_trace(trace_id)
        assert jaeger.requests == [f"/api/v3/traces/{trace_id}", f"/api/traces/{trace_id}",
                                   f"/api/traces/{trace_id}"]
    assert [(s.name, s.kind, s.service, s.parent_span_id, s.start_us, s.duration_us)
            for s in spans] == [("okey-dokey-0", "server", "telemetrygen", "909541b92cf05311",
                                 1706678909209712, 123)] * 2
    assert spans[0].attributes == {"otel.scope.name": "telemetrygen", "net.peer.ip": "1.2.3.4",
                                   "peer.service": "telemetrygen-client"}


def test_legacy_trace_with_16_hex_ids_typed_tags_logs_and_references() -> None:
    """ui_01.json: 16-hex ids are left-padded, tags typed, logs become events, refs parent/links."""
    body = b'{"data":[' + use("ui_01.json") + b'],"total":0,"limit":0,"offset":0,"errors":null}'
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/traces/00000000000000000000000000000001"] = Reply(body=body)
        spans = JaegerClient(jaeger.url).get_trace("0000000000000001")
    tid = "00000000000000000000000000000001"
    assert [(s.trace_id, s.span_id, s.parent_span_id, s.service) for s in spans] == [
        (tid, "0000000000000002", None, "service-x"),
        (tid, "0000000000000002", None, "service-x"),
        (tid, "0000000000000003", "0000000000000002", "service-y"),
        (tid, "0000000000000004", "0000000000000002", "service-y"),
        (tid, "0000000000000005", "0000000000000004", "service-y"),
    ]
    assert spans[0].events == [
        {"name": "some-event", "time_us": 1485467191639875, "attributes": {}},
        {"name": "log", "time_us": 1485467191639875, "attributes": {"x": "y"}},
    ]
    assert spans[1].status == "error"
    assert spans[1].attributes == {"peer.service": "service-y", "peer.ipv4": 23456, "error": True,
                                   "temperature": 72.5, "javascript_limit": 9223372036854775222,
                                   "blob": "AAAwOQ=="}
    assert spans[3].links == [
        {"trace_id": "000000000000000000000000000000ff", "span_id": "00000000000000ff",
         "attributes": {"opentracing.ref_type": "child_of"}},
        {"trace_id": tid, "span_id": "0000000000000002",
         "attributes": {"opentracing.ref_type": "follows_from"}},
    ]


def test_legacy_messaging_tags_fill_columns() -> None:
    """Legacy span.kind and otel.status_code tags give kind and status; messaging.* fill columns."""
    trace = {"traceID": "abc", "processes": {"p1": {"serviceName": "billing"}}, "spans": [{
        "traceID": "abc", "spanID": "def", "operationName": "process orders",
        "startTime": 10, "duration": 5, "processID": "p1", "references": [], "logs": [
            {"timestamp": 12, "fields": [{"key": "event", "type": "string", "value": "exception"},
                                         {"key": "exception.type", "type": "string",
                                          "value": "ValueError"}]}],
        "tags": [{"key": "span.kind", "type": "string", "value": "consumer"},
                 {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                 {"key": "otel.status_description", "type": "string", "value": "boom"},
                 {"key": "messaging.message.id", "type": "string", "value": "evt-1"},
                 {"key": "messaging.consumer.group.name", "type": "string", "value": "g1"},
                 {"key": "messaging.destination.name", "type": "string", "value": "orders"},
                 {"key": "messaging.destination.partition.id", "type": "string", "value": "3"},
                 {"key": "messaging.kafka.offset", "type": "int64", "value": "42"}]}]}
    (span,) = decode_legacy({"data": [trace]})
    row = span.row(origin="jaeger", received_at_ms=1)
    assert {k: row[k] for k in ("trace_id", "span_id", "kind", "status", "status_message",
                                "service", "message_id", "consumer_group", "destination",
                                "partition", "offset", "error_type")} == {
        "trace_id": "00000000000000000000000000000abc", "span_id": "0000000000000def",
        "kind": "consumer", "status": "error", "status_message": "boom", "service": "billing",
        "message_id": "evt-1", "consumer_group": "g1", "destination": "orders", "partition": 3,
        "offset": 42, "error_type": "ValueError"}


def test_v3_not_found_is_empty_without_fallback() -> None:
    """Jaeger's JSON 404 "No traces found" is an empty trace, and the legacy API is not asked."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{trace_id}"] = Reply(404, NOT_FOUND_V3,
                                                            "text/plain; charset=utf-8")
        jaeger.routes["/api/v3/traces"] = Reply(404, NOT_FOUND_V3, "text/plain; charset=utf-8")
        client = JaegerClient(jaeger.url)
        assert client.get_trace(trace_id) == []
        assert client.find_traces("foo", 0, 1) == {}
        assert client.api_v3 is True
        assert len(jaeger.requests) == 2


def test_legacy_not_found_is_empty() -> None:
    """The legacy 404 envelope (errors: trace not found) is an empty trace."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/traces/{trace_id}"] = Reply(404, NOT_FOUND_LEGACY)
        assert JaegerClient(jaeger.url).get_trace(trace_id) == []


def test_a_url_that_is_not_jaeger_is_unavailable_not_every_trace_missing() -> None:
    """A server answering a plain 404 on both APIs (say --jaeger given the OTLP port) is not
    a Jaeger query service: JaegerUnavailable naming the URL, for a trace, the services and
    a search alike, never an empty answer that marks every trace missing."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with FakeJaeger() as jaeger:  # no routes: every path is a plain 404
        client = JaegerClient(jaeger.url)
        for ask in (lambda: client.get_trace(trace_id), client.services,
                    lambda: client.find_traces("orders", 0, 1)):
            with pytest.raises(JaegerUnavailable) as info:
                ask()
            assert str(info.value).startswith(f"{jaeger.url} is not a Jaeger query API: GET ")
        assert jaeger.requests[:2] == [f"/api/v3/traces/{trace_id}", f"/api/traces/{trace_id}"]


@pytest.mark.parametrize(("status", "body", "message"), [
    (400, b'{"error":{"httpCode":400,"message":"malformed parameter query.start_time_min: '
          b'parsing time"}}\n', "malformed parameter query.start_time_min: parsing time"),
    (500, b'{"error":{"httpCode":500,"message":"storage unavailable"}}\n', "storage unavailable"),
    (502, b"Bad Gateway\n", "Bad Gateway"),
])
def test_error_bodies_raise_with_their_message(status: int, body: bytes, message: str) -> None:
    """400/500 text/plain error bodies raise JaegerError carrying status and Jaeger's message."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/traces"] = Reply(status, body, "text/plain; charset=utf-8")
        with pytest.raises(JaegerError) as info:
            JaegerClient(jaeger.url).find_traces("foo", 0, 1)
    assert info.value.status == status
    assert str(info.value).endswith(f"HTTP {status}: {message}")
    assert not isinstance(info.value, JaegerUnavailable)


def test_non_json_success_body_raises() -> None:
    """A 200 body that is not JSON is a clear error."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(200, b"<html>proxy login</html>", "text/html")
        with pytest.raises(JaegerError, match="expected a JSON body"):
            JaegerClient(jaeger.url).services()


def test_timeout_raises_unavailable() -> None:
    """A server slower than timeout_s is reported as unavailable, after about timeout_s."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=fixture("GetServices.json"), delay_s=1.5)
        with pytest.raises(JaegerUnavailable, match=r"timed out after 0\.2s"):
            JaegerClient(jaeger.url, timeout_s=0.2).services()


def test_an_answer_dripping_in_is_given_up_at_its_deadline() -> None:
    """A server sending a byte every 0.1 s never leaves a wait of timeout_s idle; the whole
    answer is given 6 timeout_s (the fetching thread runs the collector's upkeep too)."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=fixture("GetServices.json"), drip_s=0.1)
        started = time.monotonic()
        with pytest.raises(JaegerUnavailable,
                           match=r"did not finish its answer within 1\.8s \(GET /api/v3/services"):
            JaegerClient(jaeger.url, timeout_s=0.3).services()
        assert 1.8 <= time.monotonic() - started < 3.0


def test_a_status_line_and_headers_dripping_in_are_given_up_at_the_deadline() -> None:
    """The deadline covers the whole exchange: a server that sends its status line and
    headers a byte every 0.1 s is given up after 6 timeout_s as well, not when it is done."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=fixture("GetServices.json"), drip_s=0.1,
                                                  drip_head=True)
        started = time.monotonic()
        with pytest.raises(JaegerUnavailable,
                           match=r"did not finish its answer within 1\.2s \(GET /api/v3/services"):
            JaegerClient(jaeger.url, timeout_s=0.2).services()
        assert 1.2 <= time.monotonic() - started < 3.0


def test_credentials_in_the_url_are_basic_auth_and_never_shown() -> None:
    """`http://user:pass@host` authenticates as curl would (urllib took `user:pass@host`
    for the host name), and no error message names the password."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=fixture("GetServices.json"))
        url = jaeger.url.replace("http://", "http://reader:p%40ss@")
        client = JaegerClient(url)
        assert client.services() == json.loads(fixture("GetServices.json"))["services"]
        assert jaeger.authorizations == ["Basic cmVhZGVyOnBAc3M="]  # reader:p@ss
        assert client.base_url == jaeger.url
    with pytest.raises(JaegerUnavailable, match="refused") as info:  # the server is gone
        client.services()
    assert "p%40ss" not in str(info.value) and "reader" not in str(info.value)
    with pytest.raises(ValueError, match=r"ftp://reader:\*\*\*@host"):
        JaegerClient("ftp://reader:hunter2@host")


def test_connection_refused_raises_unavailable() -> None:
    """Jaeger down (nothing listening) is JaegerUnavailable, a ConnectionError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = JaegerClient(f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(JaegerUnavailable, match="unreachable") as info:
        client.get_trace("0af7651916cd43dd8448eb211c80319c")
    assert isinstance(info.value, ConnectionError)


def test_a_server_that_does_not_speak_http_is_unavailable() -> None:
    """A URL pointing at something else (a Kafka port, say) that answers bytes that are no
    HTTP status line is JaegerUnavailable naming what came, not http.client's own error."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x00\x00\x00\x08 not http\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(JaegerUnavailable, match=r"unreachable: .*not http"):
            JaegerClient(f"http://127.0.0.1:{port}", timeout_s=2).services()
        thread.join(5)


def test_bad_url_and_bad_trace_id_are_rejected() -> None:
    """Configuration and id errors say what was expected."""
    with pytest.raises(ValueError, match="expected a Jaeger URL"):
        JaegerClient("localhost:16686")
    with pytest.raises(ValueError, match="expected a 32-hex-digit trace id"):
        JaegerClient("http://localhost:16686").get_trace("not-a-trace-id")


def test_rfc3339_has_nanoseconds() -> None:
    """Query times are RFC 3339 UTC with nine fraction digits."""
    assert rfc3339(1_485_467_191_639) == "2017-01-26T21:46:31.639000000Z"


def test_every_fixture_is_covered() -> None:
    """The served list names every JSON file of the shared Jaeger fixtures."""
    assert {p.name for p in FIXTURES.glob("*.json")} == SERVED


def test_malformed_trace_bodies_are_errors_or_skipped_spans() -> None:
    """A v3 result that is not TracesData is a JaegerError; bad legacy spans are skipped."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/traces/00000000000000000000000000000001"] = Reply(
            body=b'{"result":{"resourceSpans":{"oops":1}}}')
        jaeger.routes["/api/v3/traces/00000000000000000000000000000002"] = Reply(
            body=b'{"error":"nope"}')
        client = JaegerClient(jaeger.url)
        with pytest.raises(JaegerError, match="malformed api/v3 traces"):
            client.get_trace("1")
        with pytest.raises(JaegerError, match="expected an api/v3 body"):
            client.get_trace("2")
    legacy = json.loads(fixture("ui_01.json"))
    legacy["spans"][2]["spanID"] = 7
    legacy["spans"][3]["references"] = "CHILD_OF"
    legacy["spans"][4]["logs"] = [{"timestamp": "soon"}]
    assert [(s.span_id[-1], s.parent_span_id, s.links) for s in decode_legacy(
        {"data": [legacy]})] == [("2", None, []), ("2", None, []), ("4", None, [])]
    with pytest.raises(SpanFormatError, match="expected the legacy data to be a list"):
        decode_legacy({"data": 5})
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/traces/00000000000000000000000000000003"] = Reply(
            body=b'{"data":null,"errors":[{"code":500,"msg":"storage down"}]}')
        with pytest.raises(JaegerError, match="malformed legacy traces: Jaeger legacy API errors"):
            JaegerClient(jaeger.url).get_trace("3")
