"""encode_headers and encode_value: the binary-mode wire format, and back through the decoder."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreoscope.instrumentation import wire
from choreoscope.instrumentation.decoder import decode_record
from choreoscope.instrumentation.errors import UsageError
from choreoscope.instrumentation.event import Event

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FULL = Event(
    id="019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69",
    type="order.placed",
    source="orders",
    subject="ord_1",
    correlation_id="corr-1",
    causation_id="cause-1",
    schema_version="2",
    time="2026-11-26T05:35:14.123Z",
    sequence=5,
    data={"total": 3},
)


def test_full_headers_in_order() -> None:
    """Every envelope field becomes its ce_* header, then content type and trace context."""
    headers = wire.encode_headers(FULL, TP, "k=v", "text/plain")
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69"),
        ("ce_type", b"order.placed"),
        ("ce_source", b"orders"),
        ("ce_time", b"2026-11-26T05:35:14.123Z"),
        ("ce_subject", b"ord_1"),
        ("ce_schemaversion", b"2"),
        ("ce_correlationid", b"corr-1"),
        ("ce_causationid", b"cause-1"),
        ("ce_sequence", b"5"),
        ("content-type", b"text/plain"),
        ("traceparent", TP.encode()),
        ("tracestate", b"k=v"),
    ]


def test_headers_without_value_left_out() -> None:
    """A root event writes no causation, sequence, subject, content type or trace headers."""
    root = Event(id="e", type="order.placed", source="orders", schema_version="1", time=FULL.time)
    assert [name for name, _ in wire.encode_headers(root)] == [
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "ce_schemaversion",
    ]
    assert wire.encode_headers(Event(id=None, type=None, source=None)) == [
        ("ce_specversion", b"1.0")
    ]


def test_sequence_zero_is_written() -> None:
    """Sequence 0 is a value, not an absence."""
    event = Event(id="e", type="t.created", source="s", sequence=0)
    assert ("ce_sequence", b"0") in wire.encode_headers(event)


def test_non_ascii_values_are_utf8() -> None:
    """Header values are UTF-8 bytes."""
    event = Event(id="e", type="t.created", source="café", subject="ключ")
    headers = dict(wire.encode_headers(event))
    assert (headers["ce_source"], headers["ce_subject"]) == ("café".encode(), "ключ".encode())


def test_encode_value() -> None:
    """JSON for objects (compact), bytes and text declared as such, None a tombstone."""
    assert wire.encode_value({"a": [1, 2], "b": None}) == (b'{"a":[1,2],"b":null}', None)
    assert wire.encode_value([1]) == (b"[1]", None)
    assert wire.encode_value(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    assert wire.encode_value(bytearray(b"x")) == (b"x", "application/octet-stream")
    assert wire.encode_value("héllo") == ("héllo".encode(), "text/plain; charset=utf-8")
    assert wire.encode_value(None) == (None, None)
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert wire.encode_value({"at": when}) == (b'{"at":"2026-01-02T00:00:00+00:00"}', None)


class Colour(enum.Enum):
    RED = "red"


def test_values_json_has_no_type_for() -> None:
    """Times and dates as ISO 8601, UUIDs and Decimals as text, enums by value, sets as lists;
    anything else is refused rather than sent as its str()."""
    data = {
        "day": dt.date(2026, 1, 2),
        "at": dt.time(3, 4, 5),
        "id": uuid.UUID("019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69"),
        "price": Decimal("12.50"),
        "colour": Colour.RED,
        "tags": {"a"},
    }
    assert wire.encode_value(data) == (
        b'{"day":"2026-01-02","at":"03:04:05","id":"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69",'
        b'"price":"12.50","colour":"red","tags":["a"]}',
        None,
    )
    with pytest.raises(UsageError, match="cannot send a value of type object as JSON event data"):
        wire.encode_value({"x": object()})


def test_round_trip_through_decoder() -> None:
    """What encode_headers and encode_value write, decode_record reads back exactly."""
    for data in ({"total": 3}, [1, "x"], "plain text", b"\xff\x00", None, 7):
        value, content_type = wire.encode_value(data)
        headers = wire.encode_headers(FULL, TP, "k=v", content_type)
        event = decode_record(headers, value, topic="t", partition=0, offset=9)
        assert event.problems == [], data
        assert event.data == data
        assert (event.id, event.type, event.source, event.subject, event.time) == (
            FULL.id,
            FULL.type,
            FULL.source,
            FULL.subject,
            FULL.time,
        )
        assert (event.correlation_id, event.causation_id, event.schema_version) == (
            "corr-1",
            "cause-1",
            "2",
        )
        assert (event.sequence, event.traceparent, event.tracestate) == (5, TP, "k=v")


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    id=_text,
    source=_text,
    subject=st.none() | _text,
    correlation_id=st.none() | _text,
    causation_id=st.none() | _text,
    sequence=st.none() | st.integers(min_value=-(2**70), max_value=2**70),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ),
)
def test_any_event_round_trips(
    id: str,
    source: str,
    subject: str | None,
    correlation_id: str | None,
    causation_id: str | None,
    sequence: int | None,
    data: object,
) -> None:
    """Any envelope and JSON data written by wire comes back unchanged from the decoder."""
    event = Event(
        id=id,
        type="order.placed",
        source=source,
        subject=subject,
        correlation_id=correlation_id,
        causation_id=causation_id,
        schema_version="1",
        time="2026-11-26T05:35:14.123456Z",
        sequence=sequence,
    )
    value, content_type = wire.encode_value(data)
    decoded = decode_record(wire.encode_headers(event, TP, None, content_type), value)
    assert decoded.problems == []
    assert (decoded.id, decoded.source, decoded.subject, decoded.sequence) == (
        id,
        source,
        subject,
        sequence,
    )
    assert (decoded.correlation_id, decoded.causation_id) == (correlation_id, causation_id)
    assert decoded.data == data


@pytest.mark.parametrize(("header", "sequence"), [
    (b"12", 12), (b"-3", -3), (b" 7 ", 7),
    (b"1_000", None), ("١٢".encode(), None), (b"twelve", None)])
def test_a_callers_ce_sequence_is_read_as_the_decoder_reads_it(header: bytes,
                                                               sequence: int | None) -> None:
    """What the producer takes from a caller's `ce_sequence` header is what the collector
    will read from it: decimal ASCII digits, else no sequence (the header still goes out)."""
    from choreoscope.instrumentation._send_inputs import read_caller_headers

    event = Event(None, None, "orders", None, None, None, "1")
    read_caller_headers([("ce_sequence", header)], event)
    assert event.sequence == sequence
    decoded = decode_record([("ce_specversion", b"1.0"), ("ce_sequence", header)], b"{}")
    assert decoded.sequence == sequence
