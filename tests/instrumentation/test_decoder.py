"""decode_record: every envelope, every problem code, and never an exception."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreoscope.instrumentation import decoder
from choreoscope.instrumentation.decoder import decode_record, valid_time

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BINARY = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69"),
    ("ce_type", b"order.placed"),
    ("ce_source", b"orders"),
    ("ce_time", b"2026-11-26T05:35:14.123Z"),
    ("ce_subject", b"ord_7821"),
    ("ce_schemaversion", b"2"),
    ("ce_correlationid", b"corr-1"),
    ("ce_causationid", b"cause-1"),
    ("ce_sequence", b"7"),
    ("traceparent", TP.encode()),
    ("tracestate", b"vendor=opaque"),
]
VALUE = b'{"total": 12.5, "items": [1, 2]}'


def binary(**changes: bytes | None) -> list[tuple[str, bytes]]:
    """BINARY with headers replaced (None removes one)."""
    out = [(n, changes.get(n, v)) for n, v in BINARY]
    return [(n, v) for n, v in out if v is not None]


def problems_of(headers: Any, value: Any) -> list[str]:
    return decode_record(headers, value).problems


# --- binary mode -----------------------------------------------------------------------


def test_binary_full() -> None:
    """A complete binary-mode record decodes every field, the trace context and the JSON data."""
    event = decode_record(
        BINARY, VALUE, topic="orders", partition=3, offset=42, key=b"ord_7821", timestamp_ms=17
    )
    assert (event.id, event.type, event.source, event.subject) == (
        "019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69",
        "order.placed",
        "orders",
        "ord_7821",
    )
    assert (event.correlation_id, event.causation_id, event.schema_version) == (
        "corr-1",
        "cause-1",
        "2",
    )
    assert (event.time, event.sequence, event.data) == (
        "2026-11-26T05:35:14.123Z",
        7,
        {"total": 12.5, "items": [1, 2]},
    )
    assert (event.topic, event.partition, event.offset, event.key, event.timestamp_ms) == (
        "orders",
        3,
        42,
        b"ord_7821",
        17,
    )
    assert (event.traceparent, event.tracestate, event.envelope) == (TP, "vendor=opaque", "binary")
    assert event.problems == []


def test_binary_minimal_root_event() -> None:
    """A root event without optional headers has None for them and no problems."""
    event = decode_record(
        binary(
            ce_correlationid=None,
            ce_causationid=None,
            ce_sequence=None,
            ce_subject=None,
            traceparent=None,
            tracestate=None,
        ),
        VALUE,
    )
    assert (event.correlation_id, event.causation_id, event.sequence, event.subject) == (None,) * 4
    assert (event.traceparent, event.tracestate) == (None, None)
    assert event.problems == []


@pytest.mark.parametrize(
    ("content_type", "value", "data"),
    [
        (b"application/json; charset=utf-8", b'{"a": 1}', {"a": 1}),
        (b"application/vnd.shop+json", b"[1]", [1]),
        (b"text/plain; charset=utf-8", b"hello", "hello"),
        (b"application/octet-stream", b"\xff\x00", b"\xff\x00"),
        (b"application/octet-stream", b"abc", "abc"),
    ],
)
def test_binary_content_types(content_type: bytes, value: bytes, data: Any) -> None:
    """JSON content types are parsed, others kept as text when UTF-8 and bytes otherwise."""
    event = decode_record([*BINARY, ("content-type", content_type)], value)
    assert (event.data, event.problems) == (data, [])


def test_binary_tombstone() -> None:
    """A tombstone with headers decodes with data None and no problem."""
    event = decode_record(BINARY, None)
    assert (event.id, event.data, event.problems) == (BINARY[1][1].decode(), None, [])


def test_header_shapes() -> None:
    """Headers as a tuple, a dict, a generator, str values or bytes names all decode alike."""
    expected = decode_record(BINARY, VALUE)
    shapes = [
        tuple(BINARY),
        dict(BINARY),
        (pair for pair in BINARY),
        [(n, v.decode()) for n, v in BINARY],
        [(n.encode(), v) for n, v in BINARY],
        [(n.upper(), v) for n, v in BINARY],
    ]
    for headers in shapes:
        event = decode_record(headers, VALUE)
        assert (event, event.problems) == (expected, []), headers


def test_header_without_value_is_absent() -> None:
    """A header whose value is None counts as absent, as an empty one does."""
    event = decode_record(
        [*binary(ce_subject=None, ce_causationid=b""), ("ce_subject", None)], VALUE
    )
    assert (event.subject, event.causation_id) == (None, None)
    assert event.problems == []


def test_unknown_headers_ignored() -> None:
    """Other headers, binary ones included, neither disturb decoding nor count as problems."""
    event = decode_record([*BINARY, ("X-Request-Id", b"r1"), ("app-bin", b"\xff\xfe")], VALUE)
    assert (event.id, event.problems) == (BINARY[1][1].decode(), [])


def test_already_deserialized_values() -> None:
    """A value a deserializer already turned into objects or text is kept as data."""
    assert decode_record(BINARY, {"a": 1}).data == {"a": 1}
    assert decode_record(BINARY, '{"a": 1}').data == {"a": 1}
    assert decode_record(BINARY, bytearray(b"[2]")).data == [2]
    assert decode_record(BINARY, memoryview(b"[3]")).data == [3]
    assert (decode_record(BINARY, 5).data, decode_record(BINARY, 5).problems) == (5, [])
    assert decode_record(None, 5).data == 5


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'[Infinity]', b'{"b": -Infinity}'])
@pytest.mark.parametrize("parser", ["installed", "stdlib"])
def test_nan_and_infinity_are_not_json(
    raw: bytes, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's json reads NaN and Infinity, JSON does not: the value is kept as text with an
    undecodable_value problem, whichever parser runs."""
    if parser == "stdlib":
        monkeypatch.setattr(decoder, "_fast_json", decoder._stdlib_fast_json)
    event = decode_record(BINARY, raw)
    assert event.data == raw.decode()
    assert [p.split(":")[0] for p in event.problems] == ["undecodable_value"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"big": 123456789012345678901234567890}',
        b'"\\ud800"',
        b'{"a": 1, "a": 2}',
        b'\xef\xbb\xbf{"bom": true}',
        '{"utf16": 1}'.encode("utf-16"),
        b"1e400",
        b" [1.1, -0, 0.30000000000000004] ",
    ],
)
@pytest.mark.parametrize("parser", ["installed", "stdlib"])
def test_json_same_as_standard_library(
    raw: bytes, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the JSON parser in use (orjson when installed), data is what json.loads gives."""
    if parser == "stdlib":
        monkeypatch.setattr(decoder, "_fast_json", decoder._stdlib_fast_json)
    event = decode_record(BINARY, raw)
    expected = json.loads(raw)
    assert json.dumps(event.data) == json.dumps(expected)
    assert event.problems == []


# --- structured mode -------------------------------------------------------------------

STRUCTURED = {
    "specversion": "1.0",
    "id": "e-1",
    "type": "payment.captured",
    "source": "payments",
    "time": "2026-11-26T05:35:14Z",
    "subject": "ord_1",
    "schemaversion": "3",
    "correlationid": "corr-9",
    "causationid": "e-0",
    "sequence": "4",
    "traceparent": TP,
    "datacontenttype": "application/json",
    "data": {"amount": 5},
}


def test_structured_with_content_type() -> None:
    """A structured-mode record reads the envelope, its extensions and traceparent from the value."""
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    event = decode_record(headers, json.dumps(STRUCTURED).encode())
    assert (event.id, event.type, event.source, event.subject, event.time) == (
        "e-1",
        "payment.captured",
        "payments",
        "ord_1",
        "2026-11-26T05:35:14Z",
    )
    assert (event.schema_version, event.correlation_id, event.causation_id, event.sequence) == (
        "3",
        "corr-9",
        "e-0",
        4,
    )
    assert (event.data, event.traceparent, event.envelope, event.problems) == (
        {"amount": 5},
        TP,
        "structured",
        [],
    )


def test_structured_without_content_type() -> None:
    """A value that is plainly a CloudEvents JSON object is read as structured mode."""
    event = decode_record(None, json.dumps(STRUCTURED).encode())
    assert (event.id, event.envelope, event.problems) == ("e-1", "structured", [])


def test_structured_data_base64() -> None:
    """Binary data in structured mode (data_base64) comes back as bytes."""
    obj = {**STRUCTURED, "data_base64": base64.b64encode(b"\x00\xff").decode()}
    del obj["data"]
    event = decode_record(
        [("content-type", b"application/cloudevents+json")], json.dumps(obj).encode()
    )
    assert (event.data, event.problems) == (b"\x00\xff", [])


def test_structured_header_traceparent_wins() -> None:
    """A traceparent header takes precedence over the one inside the structured envelope."""
    other = "00-11111111111111111111111111111111-2222222222222222-00"
    headers = [("content-type", b"application/cloudevents+json"), ("traceparent", other.encode())]
    assert decode_record(headers, json.dumps(STRUCTURED).encode()).traceparent == other


# --- hand-written JSON envelope --------------------------------------------------------


def test_hand_written_camel_case() -> None:
    """The camelCase hand-written envelope maps onto the event's fields."""
    value = {
        "eventId": "h-1",
        "eventType": "OrderShipped",
        "version": 2,
        "timestamp": "2026-11-26T05:35:14.5+01:00",
        "source": "shipping",
        "correlationId": "c-1",
        "causationId": "h-0",
        "aggregateId": "ord_3",
        "sequence": 9,
        "data": {"carrier": "ups"},
    }
    event = decode_record(None, json.dumps(value).encode())
    assert (event.id, event.type, event.schema_version, event.time, event.source) == (
        "h-1",
        "OrderShipped",
        "2",
        "2026-11-26T05:35:14.5+01:00",
        "shipping",
    )
    assert (event.correlation_id, event.causation_id, event.subject, event.sequence) == (
        "c-1",
        "h-0",
        "ord_3",
        9,
    )
    assert (event.data, event.envelope, event.problems) == ({"carrier": "ups"}, "json_envelope", [])


def test_hand_written_snake_case() -> None:
    """The snake_case spelling (and `payload` for the data) decodes the same way."""
    value = {
        "event_id": "h-2",
        "event_type": "order.cancelled",
        "schema_version": "1",
        "occurred_at": "2026-11-26T05:35:14Z",
        "source": "orders",
        "correlation_id": "c-2",
        "causation_id": "h-1",
        "aggregate_id": "ord_4",
        "payload": [1],
    }
    event = decode_record(None, json.dumps(value).encode())
    assert (event.id, event.type, event.schema_version, event.time) == (
        "h-2",
        "order.cancelled",
        "1",
        "2026-11-26T05:35:14Z",
    )
    assert (event.correlation_id, event.causation_id, event.subject, event.data) == (
        "c-2",
        "h-1",
        "ord_4",
        [1],
    )
    assert event.problems == []


@pytest.mark.parametrize(
    ("timestamp", "time"),
    [
        (1_795_671_417, "2026-11-26T05:36:57.000Z"),
        (1_795_671_417_330, "2026-11-26T05:36:57.330Z"),
        (1_795_671_417.25, "2026-11-26T05:36:57.250Z"),
    ],
)
def test_hand_written_epoch_timestamps(timestamp: float, time: str) -> None:
    """Epoch seconds or milliseconds become an RFC 3339 UTC time."""
    value = {
        "eventId": "h",
        "eventType": "x.created",
        "version": 1,
        "timestamp": timestamp,
        "source": "s",
        "data": {},
    }
    event = decode_record(None, json.dumps(value).encode())
    assert (event.time, event.problems) == (time, [])


# --- no envelope -----------------------------------------------------------------------


def test_bare_json_value() -> None:
    """Bare JSON without headers is kept as data of an unknown event, with a no_envelope problem."""
    event = decode_record(None, b'{"order": 1}')
    assert (event.id, event.type, event.data, event.envelope) == (
        None,
        None,
        {"order": 1},
        "unknown",
    )
    assert event.problems == ["no_envelope: no ce_* headers and no JSON envelope in the value"]


def test_non_json_value_without_headers() -> None:
    """A non-JSON value without headers is kept as text (or bytes) with both problems."""
    event = decode_record([("other", b"x")], b"plain text")
    assert (event.data, event.envelope) == ("plain text", "unknown")
    assert event.problems == [
        "no_envelope: no ce_* headers and no JSON envelope in the value",
        "undecodable_value: not JSON",
    ]
    assert decode_record(None, b"\xff\xfe").data == b"\xff\xfe"


def test_tombstone_without_headers() -> None:
    """A tombstone without headers is an unknown event without data."""
    event = decode_record(None, None)
    assert (event.data, event.envelope, event.problems) == (
        None,
        "unknown",
        ["no_envelope: no ce_* headers and no JSON envelope in the value"],
    )


# --- every problem code ----------------------------------------------------------------


_PROBLEM_CASES = [
    (binary(ce_id=None), VALUE, ["missing_id"]),
    (binary(ce_type=None), VALUE, ["missing_type"]),
    (binary(ce_source=None), VALUE, ["missing_source"]),
    (binary(ce_time=None), VALUE, ["missing_time"]),
    (binary(ce_schemaversion=None), VALUE, ["missing_schema_version"]),
    (binary(ce_specversion=b"0.3"), VALUE, ["bad_specversion: '0.3'"]),
    (binary(ce_specversion=None), VALUE, ["bad_specversion: missing"]),
    (
        binary(ce_time=b"2026-11-26 05:35"),
        VALUE,
        ["bad_time: '2026-11-26 05:35' is not RFC 3339"],
    ),
    (binary(ce_sequence=b"seven"), VALUE, ["bad_sequence: 'seven' is not an integer"]),
    (binary(ce_sequence=b"1_000"), VALUE, ["bad_sequence: '1_000' is not an integer"]),
    (binary(ce_sequence="١٢".encode()), VALUE, ["bad_sequence: '١٢' is not an integer"]),
    (
        binary(traceparent=b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),
        VALUE,
        ["bad_traceparent: uppercase hex is not allowed"],
    ),
    (
        binary(tracestate=b"a=1\x01"),
        VALUE,
        ["bad_tracestate: the value of 'a' is not a tracestate value"],
    ),
    (binary(ce_subject=b"ord\xff"), VALUE, ["bad_header: ce_subject is not valid UTF-8"]),
    ([*BINARY, ("ce_id", b"another")], VALUE, ["duplicate_header: ce_id"]),
    (binary(ce_type=b"order.place"), VALUE, ["type_not_past_tense: order.place"]),
    (BINARY, b"{not json", ["undecodable_value: not JSON"]),
    (
        None,
        json.dumps({**STRUCTURED, "id": ["x"]}).encode(),
        ["bad_field: id is a list, expected a string", "missing_id"],
    ),
    (None, b"[]", ["no_envelope: no ce_* headers and no JSON envelope in the value"]),
]


@pytest.mark.parametrize(("headers", "value", "expected"), _PROBLEM_CASES)
def test_problem_codes(headers: Any, value: bytes, expected: list[str]) -> None:
    """Each kind of defect is recorded with its stable code, and the rest still decodes."""
    event = decode_record(headers, value)
    assert event.problems == expected
    assert {p.split(":", 1)[0] for p in expected} <= {
        getattr(decoder, name) for name in dir(decoder) if name.isupper() and name[0] != "_"
    }


def test_a_type_named_for_its_topic_is_not_judged_for_tense() -> None:
    """A plain `send` without a ce_type is typed by its topic (nobody chose the name): no
    type_not_past_tense for it, in the fast path and the careful one; on another topic the
    same type is still flagged."""
    for extra in ([], [("ce_id", b"another")]):  # the second one takes the careful path
        headers = binary(ce_type=b"orders") + extra
        assert decode_record(headers, VALUE, topic="orders").problems == (
            ["duplicate_header: ce_id"] if extra else [])
        assert "type_not_past_tense: orders" in decode_record(headers, VALUE,
                                                               topic="payments").problems


def test_bad_trace_context_leaves_no_trace() -> None:
    """A bad traceparent is dropped together with its tracestate, so the consumer starts a fresh trace."""
    event = decode_record(binary(traceparent=b"ff-" + TP[3:].encode()), VALUE)
    assert (event.traceparent, event.tracestate) == (None, None)
    assert event.problems == ["bad_traceparent: version ff is invalid"]


def test_duplicate_header_same_value_is_fine() -> None:
    """A header repeated with the same value is not a problem."""
    assert problems_of([*BINARY, ("ce_id", BINARY[1][1])], VALUE) == []


def test_malformed_header_pairs() -> None:
    """Header entries that are not (name, value) pairs, or have odd types, are problems, not crashes."""
    event = decode_record([*BINARY, ("lonely",), (7, b"x"), ("ce_subject2", 5)], VALUE)
    assert event.problems == [
        "bad_header: expected a (name, value) pair, got ('lonely',)",
        "bad_header: header name of type int",
        "bad_header: ce_subject2 has a value of type int",
    ]
    assert event.id == BINARY[1][1].decode()


def test_structured_not_json() -> None:
    """A structured-mode record whose value is not a JSON object keeps the record with a problem."""
    headers = [("content-type", b"application/cloudevents+json")]
    assert problems_of(headers, b"nope")[0] == "undecodable_value: structured envelope is not JSON"
    assert problems_of(headers, b"[1]")[0] == (
        "undecodable_value: structured envelope is not a JSON object"
    )


@pytest.mark.parametrize(("value", "data", "problem"), [
    (b"[1, 2, 3]", [1, 2, 3], "structured envelope is not a JSON object"),
    (b'"hello"', "hello", "structured envelope is not a JSON object"),
    (b"null", None, "structured envelope is not a JSON object"),
    (b"42", 42, "structured envelope is not a JSON object"),
    (b"nope", "nope", "structured envelope is not JSON"),
    (b"\xff\x00", b"\xff\x00", "structured envelope is not JSON"),
    (None, None, "structured envelope has no value"),
])
def test_a_structured_value_that_is_no_envelope_is_kept_as_data(
        value: bytes | None, data: Any, problem: str) -> None:
    """The value of a record declared structured that holds no envelope is the event's data
    (it was dropped: stored as no data at all); JSON null is JSON, a missing value is none."""
    event = decode_record([("content-type", b"application/cloudevents+json")], value)
    assert (event.data, event.envelope, event.problems[0]) == (
        data, "structured", f"undecodable_value: {problem}")


def test_structured_bad_base64() -> None:
    """Invalid data_base64 is a bad_field problem and the text is kept."""
    obj = {k: v for k, v in STRUCTURED.items() if k != "data"} | {"data_base64": "!!"}
    event = decode_record(None, json.dumps(obj).encode())
    assert (event.data, event.problems) == ("!!", ["bad_field: data_base64 is not base64"])


# --- RFC 3339 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T05:35:14Z",
        "2026-11-26t05:35:14z",
        "2026-11-26 05:35:14Z",
        "2026-11-26T05:35:14.1Z",
        "2026-11-26T05:35:14.123456789Z",
        "2026-11-26T05:35:14+05:30",
        "2026-11-26T05:35:14.5-08:00",
        "2016-12-31T23:59:60Z",
        "2024-02-29T00:00:00Z",
    ],
)
def test_valid_rfc3339(text: str) -> None:
    """RFC 3339 date-times are accepted, lowercase separators and leap seconds included."""
    assert valid_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T05:35:14",
        "2026-11-26T05:35Z",
        "20261126T053514Z",
        "2026-W48-4T05:35:14Z",
        "2026-11-26T05:35:14+0530",
        "2026-11-26T05:35:14.Z",
        "2026-13-26T05:35:14Z",
        "2026-02-30T05:35:14Z",
        "2025-02-29T05:35:14Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T05:35:14+24:00",
        "2026-11-26T05:35:14Zjunk",
        "2026-11-٢6T05:35:14Z",
        " 2026-11-26T05:35:14Z",
    ],
)
def test_invalid_rfc3339(text: str) -> None:
    """Other ISO 8601 forms, impossible dates and trailing junk are rejected."""
    assert not valid_time(text)


# --- never raises ----------------------------------------------------------------------

_header_values = st.one_of(st.none(), st.binary(max_size=60), st.text(max_size=60), st.integers())
_names = st.one_of(
    st.sampled_from([n for n, _ in BINARY] + ["content-type", "CE_ID"]),
    st.text(max_size=12),
    st.binary(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.one_of(
        st.none(),
        st.lists(st.tuples(_names, _header_values), max_size=14),
    ),
    value=st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=100).map(str.encode)),
)
def test_never_raises(headers: Any, value: bytes | None) -> None:
    """Arbitrary headers and values decode to an Event without raising."""
    event = decode_record(headers, value, topic="t", partition=0, offset=1)
    assert event.offset == 1
    assert all(isinstance(p, str) for p in event.problems)


# --- the fast path gives what the careful path gives ------------------------------------

_variants = {
    "ce_specversion": [b"1.0", b"0.3", b""],
    "ce_id": [b"e-1", b""],
    "ce_type": [b"order.placed", b"order.place", b""],
    "ce_time": [
        b"2026-11-26T05:35:14.123Z",
        b"2026-11-26T05:35:14.12\xc2\xb2Z",
        b"2026-02-30T05:35:14.123Z",
        b"2026-11-26T05:35:14+01:00",
        b"yesterday",
    ],
    "ce_sequence": [b"3", b"+4", b"x", b""],
    "traceparent": [
        TP.encode(),
        TP.upper().encode(),
        b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01",
        b"",
    ],
    "tracestate": [b"a=1", b"", b"a=\x01"],
    "ce_subject": [b"ord_1", b"", b"\xff"],
}


@settings(max_examples=400, deadline=None)
@given(
    choice=st.fixed_dictionaries(
        {name: st.sampled_from([*values, None]) for name, values in _variants.items()}
    ),
    value=st.sampled_from([VALUE, None, b"x", b'{"n": 123456789012345678901}', b"[1]"]),
    extra=st.sampled_from([[], [("ce_id", b"e-2")], [("content-type", b"text/plain")]]),
)
def test_fast_path_agrees_with_careful_path(
    choice: dict[str, bytes | None], value: bytes | None, extra: list[tuple[str, bytes]]
) -> None:
    """For any mix of good and bad headers, the fast path and the careful path decode alike."""
    headers = [(n, choice.get(n, v)) for n, v in BINARY]
    headers = [(n, v) for n, v in headers if v is not None] + extra
    fast = decode_record(headers, value, topic="t", partition=1, offset=2, key=b"k", timestamp_ms=3)
    original = decoder._fast_binary
    decoder._fast_binary = lambda *args: None  # type: ignore[assignment]
    try:
        careful = decode_record(
            headers, value, topic="t", partition=1, offset=2, key=b"k", timestamp_ms=3
        )
    finally:
        decoder._fast_binary = original
    assert (fast, fast.problems) == (careful, careful.problems)
    assert json.dumps(fast.data, default=repr) == json.dumps(careful.data, default=repr)


def test_hand_written_bad_fields() -> None:
    """Wrongly typed fields of a hand-written envelope are bad_field problems, in field order."""
    value = {
        "eventId": {"x": 1},
        "eventType": ["a"],
        "version": 1,
        "timestamp": True,
        "source": "s",
        "sequence": "3.5",
        "data": None,
    }
    event = decode_record(None, json.dumps(value).encode())
    assert (event.id, event.type, event.time, event.sequence) == (None, None, None, None)
    assert event.problems == [
        "bad_field: id is a dict, expected a string",
        "bad_field: type is a list, expected a string",
        "bad_field: time is a bool, expected a string",
        "bad_sequence: '3.5' is not an integer",
        "missing_id",
        "missing_type",
        "missing_time",
    ]


def test_a_sequence_holding_an_object_is_named_not_quoted() -> None:
    """A hand-written envelope whose sequence is an object: the problem names its kind, it
    does not quote it (it may hold payload fields; problems are shown with the anomalies)."""
    value = {"eventId": "e1", "eventType": "a.done", "sequence": {"password": "s3cret"},
             "data": None}
    event = decode_record(None, json.dumps(value).encode())
    assert "bad_sequence: a dict is not an integer" in event.problems
    assert "s3cret" not in json.dumps(event.problems)


def test_every_problem_code_is_tested() -> None:
    """The problem-code table above covers every code the decoder defines."""
    codes = {
        value
        for name, value in vars(decoder).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }
    tested = {p.split(":", 1)[0] for params in _PROBLEM_CASES for p in params[2]}
    assert codes == tested


@pytest.mark.parametrize(("value", "envelope"), [
    ({"event_type": "click", "user": 7}, "unknown"),
    ({"eventId": "app-1", "amount": 3}, "unknown"),
    ({"eventId": "e1", "data": 1}, "json_envelope"),
    ({"eventType": "x.done", "source": "s"}, "json_envelope"),
    ({"event_id": "a", "event_type": "b.done", "order_id": "o1"}, "json_envelope"),
    ({"source": "s", "data": {}, "timestamp": 1}, "unknown"),
])
def test_a_hand_written_envelope_takes_a_naming_key_and_one_more(value, envelope) -> None:
    """An id or type key beside another envelope key is the hand-written envelope; one such
    key alone is a payload field, and envelope keys without one naming the event are too."""
    assert decode_record(None, json.dumps(value).encode()).envelope == envelope


def test_ids_that_differ_only_in_bytes_that_are_not_utf8_stay_apart() -> None:
    """Bad bytes are escaped, not all replaced by one character: `\\xff abc` and `\\xfe abc`
    are two event ids and two correlation ids (a duplicate is the same id twice)."""
    first = decode_record(binary(ce_id=b"\xffabc", ce_correlationid=b"\xffwf"), VALUE)
    second = decode_record(binary(ce_id=b"\xfeabc", ce_correlationid=b"\xfewf"), VALUE)
    assert (first.id, first.correlation_id) == ("\\xffabc", "\\xffwf")
    assert (second.id, second.correlation_id) == ("\\xfeabc", "\\xfewf")
    assert first.problems == ["bad_header: ce_id is not valid UTF-8",
                              "bad_header: ce_correlationid is not valid UTF-8"]


def test_json_nested_too_deeply_is_not_called_not_json() -> None:
    """Valid JSON nested deeper than the parser goes is kept as raw data with a problem that
    says so, in each place a value is read: binary data, a structured envelope, no envelope."""
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_type", b"a.happened"),
               ("ce_source", b"s")]
    binary = decode_record(headers, deep)
    assert "undecodable_value: JSON nested too deeply to read" in binary.problems
    assert binary.data == deep.decode()
    structured = decode_record([("content-type", b"application/cloudevents+json")], deep)
    assert ("undecodable_value: structured envelope is JSON nested too deeply to read"
            in structured.problems)
    bare = decode_record(None, deep)
    assert "undecodable_value: JSON nested too deeply to read" in bare.problems
    assert "undecodable_value: not JSON" in decode_record(headers, b"{oops").problems
