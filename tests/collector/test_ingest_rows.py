"""Decoded events become exact `events` rows; bad rows never break a batch."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from choreoscope.collector.ingest.batch import store_rows
from choreoscope.collector.ingest.redact import Redactor
from choreoscope.collector.ingest.rows import event_row, time_ms
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from choreoscope.instrumentation.decoder import decode_record, valid_time

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OBSERVED = 1_700_000_000_000


def _row(headers, value, offset=7, key=b"ord_1"):
    event = decode_record(headers, value, topic="orders", partition=2, offset=offset, key=key,
                          timestamp_ms=1_699_999_999_000)
    return event_row(event, redactor=Redactor(), observed_at_ms=OBSERVED, headers=headers,
                     value_size=None if value is None else len(value))


def _binary(**extra: bytes) -> list[tuple[str, bytes]]:
    headers = {
        "ce_specversion": b"1.0", "ce_id": b"e1", "ce_type": b"order.placed",
        "ce_source": b"shop", "ce_time": b"2026-01-02T03:04:05.678Z", "ce_subject": b"ord_1",
        "ce_schemaversion": b"1", "ce_correlationid": b"c1", "traceparent": TP.encode(),
    }
    headers.update(extra)
    return list(headers.items())


def test_binary_event_row_is_exact() -> None:
    """Every column of a clean binary-mode event is filled from the record."""
    row = _row(_binary(ce_causationid=b"e0", ce_sequence=b"3"), b'{"total":3,"email":"a@b"}')
    assert row == {
        "topic": "orders", "partition": 2, "offset": 7, "event_id": "e1",
        "type": "order.placed", "source": "shop", "subject": "ord_1", "correlation_id": "c1",
        "causation_id": "e0", "flow_id": "c1", "schema_version": "1",
        "time": "2026-01-02T03:04:05.678Z", "time_ms": 1767323045678, "sequence": 3,
        "key": "ord_1", "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331", "broker_ts_ms": 1_699_999_999_000,
        "observed_at_ms": OBSERVED, "envelope": "binary", "problems": None,
        "headers": json.dumps({k: v.decode() for k, v in _binary(ce_causationid=b"e0",
                               ce_sequence=b"3")}, separators=(",", ":")),
        "data": '{"total":3,"email":"[REDACTED]"}', "data_size": 25, "data_truncated": False,
        "trace_sampled": True,
    }


@pytest.mark.parametrize(("flags", "sampled"), [
    ("01", True), ("00", False), ("03", True), ("02", False), ("ff", True), ("fe", False)])
def test_the_traceparents_sampled_flag_is_kept(flags: str, sampled: bool) -> None:
    """The sampled bit (0x01) of the trace flags, whatever the other bits say; no trace
    context, no flag."""
    row = _row(_binary(traceparent=f"{TP[:-2]}{flags}".encode()), b"{}")
    assert (row["trace_id"], row["trace_sampled"]) == ("0af7651916cd43dd8448eb211c80319c", sampled)
    no_trace = [h for h in _binary() if h[0] != "traceparent"]
    assert _row(no_trace, b"{}")["trace_sampled"] is None


def test_flow_id_falls_back_to_trace_then_event_id_then_position() -> None:
    """Without a correlation id the flow is the trace, then the event id, then the position."""
    no_corr = [h for h in _binary() if h[0] != "ce_correlationid"]
    assert _row(no_corr, b"{}")["flow_id"] == "0af7651916cd43dd8448eb211c80319c"
    no_trace = [h for h in no_corr if h[0] != "traceparent"]
    assert _row(no_trace, b"{}")["flow_id"] == "e1"
    assert _row(None, b"garbage\xff")["flow_id"] == "orders/2/7"


def test_problems_are_kept_on_the_row() -> None:
    """Envelope problems are stored as a JSON list of codes; bad traceparent gives no trace id."""
    headers = [h for h in _binary(traceparent=b"00-xyz") if h[0] != "ce_schemaversion"]
    row = _row(headers, b"{}")
    assert json.loads(row["problems"]) == [
        "missing_schema_version", "bad_traceparent: expected 4 dash-separated fields, got 2"]
    assert (row["trace_id"], row["span_id"], row["flow_id"]) == (None, None, "c1")


def test_garbage_and_tombstone_rows() -> None:
    """A non-JSON value and a tombstone are kept as unknown events with their problems."""
    garbage = _row(None, b"\xff\xfe not json", key=None)
    assert (garbage["envelope"], garbage["event_id"], garbage["data_size"]) == ("unknown", None, 11)
    assert json.loads(garbage["data"]) == {"_base64": "//4gbm90IGpzb24="}
    assert [p.split(":")[0] for p in json.loads(garbage["problems"])] == [
        "no_envelope", "undecodable_value"]
    tomb = _row(_binary(), None)
    assert (tomb["data"], tomb["data_size"], tomb["problems"], tomb["event_id"]) == (
        None, None, None, "e1")


def test_a_key_is_stored_as_its_text_or_else_its_hex() -> None:
    """Printable UTF-8 keys are stored as text; binary ones (not UTF-8, or with control
    bytes such as NUL, which PostgreSQL text cannot hold) as their hex, as the subject they
    give: two binary keys never read as one, and no control byte reaches a terminal."""
    keys = {b"ord_1": "ord_1", "zamówienie".encode(): "zamówienie", b"\x00\xff\x10": "00ff10",
            b"\xfe\x01": "fe01", b"a\x1b[2J": "611b5b324a", b"": ""}
    assert {raw: _row(_binary(), b"{}", key=raw)["key"] for raw in keys} == keys
    assert _row(_binary(), b"{}", key=None)["key"] is None


def test_overlong_fields_nul_and_huge_sequence_are_fitted_with_problems() -> None:
    """Values the store cannot hold are cut or dropped, each with a recorded problem."""
    row = _row(_binary(ce_id=b"i" * 300, ce_type=b"order\x00placed",
                       ce_schemaversion=b"v" * 40), b"{}")
    assert row["event_id"] == "i" * 95 + "#" + hashlib.sha256(b"i" * 300).hexdigest()[:32]
    assert row["type"] == "order\ufffdplaced"
    assert row["schema_version"] == "v" * 32  # no identifier: cut plainly
    assert json.loads(row["problems"]) == [
        "field_too_long: event_id has 300 characters, kept its first 95 and a hash of the whole",
        "field_too_long: schema_version has 40 characters, kept 32"]
    big = _row(_binary(ce_sequence=str(1 << 70).encode()), b"{}")
    assert big["sequence"] is None
    assert json.loads(big["problems"]) == [f"bad_sequence: {1 << 70} does not fit 64 bits"]


def test_headers_over_the_data_limit_are_cut_with_a_problem() -> None:
    """Headers are held to the data's size limit: over it, names and values are cut to 256
    characters and the headers that still do not fit are left out, in their order, with a
    problem saying so; headers within it are stored whole."""
    redactor = Redactor(max_bytes=2000)
    extra = [(f"x-{n}", b"v" * 300) for n in range(8)] + [("x-" + "n" * 300, b"w")]
    headers = _binary() + extra
    event = decode_record(headers, b"{}", topic="orders", partition=0, offset=1)
    row = event_row(event, redactor=redactor, observed_at_ms=OBSERVED, headers=headers)
    stored = json.loads(row["headers"])
    envelope = {k: v.decode() for k, v in _binary()}
    cut = "v" * 255 + "\u2026"
    # the envelope's 9 headers take 258 bytes, each cut header 267 more: six fit in 2000
    assert stored == envelope | {f"x-{n}": cut for n in range(6)}
    assert len(row["headers"].encode()) == 258 + 6 * 267 <= 2000
    size = len(json.dumps({k: v.decode() for k, v in headers}, separators=(",", ":")))
    assert json.loads(row["problems"]) == [
        f"headers_too_large: {size} bytes of headers, over 2000; names and values cut to "
        "256 characters, 3 of 18 headers left out"]
    within = _binary(x_note=b"v" * 300)
    small = event_row(decode_record(within, b"{}", topic="orders", partition=0, offset=2),
                      redactor=redactor, observed_at_ms=OBSERVED, headers=within)
    assert json.loads(small["headers"])["x_note"] == "v" * 300
    assert small["problems"] is None


def test_long_ids_sharing_a_start_stay_distinct_and_still_match() -> None:
    """Correlation ids of 300 characters differing only at their end are two flows, not one;
    a causation id naming an over-long event id is cut the same way, so it still names it."""
    start = b"x" * 300
    first = _row(_binary(ce_id=start + b"-e1", ce_correlationid=start + b"-t1-1"), b"{}")
    second = _row(_binary(ce_id=start + b"-e2", ce_correlationid=start + b"-t1-2",
                          ce_causationid=start + b"-e1"), b"{}", offset=8)
    assert len(first["flow_id"]) == len(second["flow_id"]) == 128
    assert first["flow_id"] != second["flow_id"]
    assert (first["correlation_id"], second["correlation_id"]) == (
        first["flow_id"], second["flow_id"])
    assert second["causation_id"] == first["event_id"] != second["event_id"]


def test_time_ms_parses_rfc3339_only() -> None:
    """Times with an offset parse to epoch milliseconds; naive or garbage times give None."""
    assert time_ms("1970-01-01T00:00:01.5+00:00") == 1500
    assert (time_ms("2026-01-01T00:00:00"), time_ms("yesterday"), time_ms(None)) == (
        None, None, None)


@pytest.mark.parametrize("value", [
    "2026-11-28T10:00:00.\u00b2Z",  # isdigit() but not int(): it raised and lost the event
    "2026-11-28T10:00:00.\u0661\u0662\u0663Z",  # the decoder calls it bad_time
    "2026-11-28T10:00:0\u0662.1Z", "2026-11-28T10:00:00.1+0\u0661:00"])
def test_time_ms_of_digits_other_than_ascii_is_none(value: str) -> None:
    assert time_ms(value) is None


def test_time_ms_reads_every_time_the_decoder_accepts() -> None:
    """Lower-case `t`/`z`, a space for `T` and a leap second are RFC 3339 too: each parses, so
    no valid time drops out of time ordering."""
    base = time_ms("2026-11-27T09:08:07.160Z")
    assert base == 1_795_770_487_160
    assert time_ms("2026-11-27t09:08:07.160z") == base
    assert time_ms("2026-11-27 09:08:07.160Z") == base
    assert time_ms("2026-11-27t10:08:07.160+01:00") == base
    assert time_ms("2016-12-31T23:59:60Z") == time_ms("2017-01-01T00:00:00Z") == 1_483_228_800_000
    assert time_ms("2016-12-31T23:59:60.500z") == 1_483_228_800_000
    for value in ("2026-11-27t09:08:07.160z", "2016-12-31T23:59:60Z", "2016-12-31T23:59:60.500z"):
        assert valid_time(value), value


@pytest.mark.postgres
def test_a_row_the_database_rejects_does_not_hold_back_the_batch(postgres_url: str) -> None:
    """A row with a lone surrogate is stored sanitized; the other rows of the batch are stored."""
    store = Store(postgres_url).create()
    rows = [_row(_binary(), b'{"a":1}', offset=i) for i in range(3)]
    rows[1]["data"] = '{"a":"\ud800"}'
    assert store_rows(store, rows) == 3
    with store.engine.connect() as conn:
        stored = conn.execute(select(events.c.offset, events.c.data, events.c.problems)
                              .order_by(events.c.offset)).all()
    assert [r.offset for r in stored] == [0, 1, 2]
    assert stored[1].data == '{"a":"\ufffd"}'
    assert json.loads(stored[1].problems) == ["store_rejected: text sanitized"]
    assert store_rows(store, rows) == 0  # idempotent
    store.dispose()


def test_sqlite_store_is_idempotent(tmp_path) -> None:
    """Storing the same rows twice inserts them once."""
    store = Store(f"sqlite:///{tmp_path}/s.db").create()
    rows = [_row(_binary(), b"{}", offset=i) for i in range(5)]
    assert (store_rows(store, rows), store_rows(store, rows)) == (5, 0)
    store.dispose()
