"""Property-based fuzzing of the envelope decoder: never an exception, every problem recorded,
the record kept (decoded, turned into a row and stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from choreoscope.collector.ingest.batch import store_rows
from choreoscope.collector.ingest.redact import Redactor
from choreoscope.collector.ingest.rows import event_row
from choreoscope.collector.store import Store
from choreoscope.instrumentation.decoder import decode_record

# Derandomized (same examples every run, for CI) and without the shrink phase: shrinking
# megabyte inputs can take minutes; a failure is reported with its unshrunk example.
FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

CODES = {"missing_id", "missing_type", "missing_source", "missing_time",
         "missing_schema_version", "bad_specversion", "bad_time", "bad_sequence",
         "bad_traceparent", "bad_tracestate", "bad_header", "duplicate_header",
         "type_not_past_tense", "undecodable_value", "bad_field", "no_envelope"}
KNOWN = ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_subject",
         "ce_schemaversion", "ce_correlationid", "ce_causationid", "ce_sequence",
         "content-type", "traceparent", "tracestate"]
GOOD = [("ce_specversion", b"1.0"), ("ce_id", b"ev-1"), ("ce_type", b"order.placed"),
        ("ce_source", b"shop"), ("ce_time", b"2026-01-01T00:00:00Z"),
        ("ce_schemaversion", b"1")]
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
wrong_types = st.sampled_from([[], [1], {}, {"a": 1}, True, None, 3.5, -1, ""])
names = st.sampled_from(KNOWN) | st.text(max_size=20) | st.binary(max_size=10) | st.none() \
    | st.integers()
values = st.binary(max_size=64) | st.none() | st.text(max_size=20) | st.integers() \
    | st.sampled_from([TP, "00-zz", "ff-" + TP[3:], TP + "\n", "a=b,,==", "\xff\x00"])
headers = st.lists(st.tuples(names, values), max_size=12)
raw_values = (st.binary(max_size=256) | st.none()
              | json_values.map(lambda v: json.dumps(v).encode())
              | st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n)
              | st.integers(1, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
              | st.sampled_from([b"\xff\xfe\xfd", b'{"data": "\xc3\x28"}', b"{", b"null",
                                 b'"\\ud800"', b"1e999999", b"NaN", b"\x00" * 10]))

_ROWS: list[dict[str, Any]] = []
_REDACTOR = Redactor()


def _kept(hdrs: Any, value: Any, offset: int = 7) -> Any:
    """Decode and build the row; both must succeed and keep the record's position."""
    event = decode_record(hdrs, value, topic="t.fuzz", partition=0, offset=offset, key=b"k")
    assert (event.topic, event.partition, event.offset, event.key) == ("t.fuzz", 0, offset, b"k")
    assert isinstance(event.problems, list)
    for problem in event.problems:
        assert isinstance(problem, str) and problem.split(":", 1)[0] in CODES, problem
    # The collector's rows are built from confluent-kafka headers: (str, bytes | None) pairs.
    wire_like = isinstance(hdrs, list) and all(
        isinstance(n, str) and (v is None or isinstance(v, bytes)) for n, v in hdrs)
    row = event_row(event, redactor=_REDACTOR, observed_at_ms=1,
                    headers=hdrs if wire_like else None,
                    raw_value=value if isinstance(value, bytes) else None)
    assert (row["topic"], row["partition"], row["offset"]) == ("t.fuzz", 0, offset)
    if len(_ROWS) < 2000:
        _ROWS.append(row)
    return event


@FUZZ
@given(headers, raw_values)
def test_arbitrary_headers_and_values_never_raise(hdrs, value) -> None:
    """Any header names/values and any value bytes decode to a kept event with coded problems."""
    _kept(hdrs, value)


@FUZZ
@given(st.sampled_from(KNOWN[:10]), st.binary(min_size=1, max_size=16))
def test_invalid_utf8_header_is_a_problem(name, junk) -> None:
    """A known header whose bytes are not UTF-8 is named in a bad_header problem."""
    bad = b"\xff" + junk
    hdrs = [(n, v) for n, v in GOOD if n != name] + [(name, bad)]
    event = _kept(hdrs, b"{}")
    assert f"bad_header: {name} is not valid UTF-8" in event.problems


@FUZZ
@given(st.sampled_from(KNOWN), st.text(max_size=16), st.text(max_size=16))
def test_duplicate_headers_are_a_problem(name, first, second) -> None:
    """A known header given twice with different values is a duplicate_header problem."""
    hdrs = [*GOOD, (name, first.encode()), (name, second.encode())]
    if first == second and name not in dict(GOOD):
        return
    event = _kept(hdrs, b"{}")
    assert any(p.startswith(f"duplicate_header: {name}") for p in event.problems), event.problems


@FUZZ
@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_malformed_traceparent_is_a_problem(tp) -> None:
    """Anything but a valid W3C traceparent is dropped from the event with bad_traceparent."""
    event = _kept([*GOOD, ("traceparent", tp.encode("utf-8", "surrogatepass"))], b"{}")
    if event.traceparent is None and tp:
        assert any(p.startswith(("bad_traceparent", "bad_header")) for p in event.problems)
    if event.traceparent is not None:
        assert event.traceparent == tp


@FUZZ
@given(st.text(min_size=1, max_size=40).filter(
           lambda s: any(not (c.isascii() and c.isprintable()) and c not in " \t" for c in s))
       | st.integers(257, 4096).map(lambda n: "a=" + "b" * n))
def test_malformed_tracestate_is_a_problem(ts) -> None:
    """A tracestate with a character W3C allows nowhere in it (not printable ASCII, not the
    spaces and tabs around members), or a value over 256 characters, is a bad_tracestate
    problem."""
    event = _kept([*GOOD, ("traceparent", TP.encode()), ("tracestate", ts.encode())], b"{}")
    assert event.tracestate is None
    assert any(p.startswith(("bad_tracestate", "bad_header")) for p in event.problems)


STRUCTURED = {"specversion": "1.0", "id": "ev-1", "type": "order.placed", "source": "shop",
              "time": "2026-01-01T00:00:00Z", "schemaversion": "1", "subject": "o-1",
              "correlationid": "c-1", "causationid": "ev-0", "sequence": 3, "data": {"a": 1}}
FIELD_CODE = {"specversion": "bad_specversion", "sequence": "bad_sequence"}
HAND = {"eventId": "ev-1", "eventType": "order.placed", "version": "1",
        "timestamp": "2026-01-01T00:00:00Z", "source": "shop", "correlationId": "c-1",
        "causationId": "ev-0", "data": {"a": 1}}


@FUZZ
@given(st.sampled_from(sorted(STRUCTURED)), wrong_types)
def test_wrong_type_for_every_structured_field(field, wrong) -> None:
    """Each CloudEvents structured field of a wrong type is a problem; the event is kept."""
    if field == "data":
        return
    body = json.dumps({**STRUCTURED, field: wrong}).encode()
    event = _kept([("content-type", b"application/cloudevents+json")], body)
    if isinstance(wrong, (list, dict, bool)):
        code = FIELD_CODE.get(field, "bad_field")
        assert any(p.startswith(code) for p in event.problems), (field, event.problems)
    elif wrong in (None, "") and field in ("id", "type", "source", "time", "schemaversion"):
        assert any(p.startswith(("missing_", "bad_specversion")) for p in event.problems)


@FUZZ
@given(st.sampled_from(sorted(HAND)), wrong_types)
def test_wrong_type_for_every_hand_written_field(field, wrong) -> None:
    """Each hand-written envelope field of a wrong type is a problem; the event is kept."""
    if field == "data":
        return
    event = _kept([], json.dumps({**HAND, field: wrong}).encode())
    if isinstance(wrong, (list, dict, bool)):
        assert any(p.startswith(("bad_field", "bad_time", "no_envelope"))
                   for p in event.problems), (field, event.problems)


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_huge_header_and_value(size) -> None:
    """Megabyte header values and values are decoded, problems noted, nothing raised."""
    huge = b"x" * size
    event = _kept([*GOOD, ("ce_subject", huge), ("tracestate", huge), ("x-big", huge)],
                  b'{"blob":"' + huge + b'"}')
    assert event.subject == "x" * size
    assert any(p.startswith("bad_tracestate") for p in event.problems)


def test_every_fuzzed_row_is_stored(tmp_path) -> None:
    """The rows built from fuzzed records all go into a real store (none rejected outright)."""
    if not _ROWS:  # run alone: a few odd records of its own
        for i, value in enumerate([b'"\\ud800"', b"\xff", None, b"[" * 5000, b'{"a":1}']):
            _kept([("ce_id", b"\xff"), ("ce_id", b"x"), ("traceparent", b"00-zz")], value, i)
    store = Store(f"sqlite:///{tmp_path}/fuzz.db").create()
    rows = [dict(r, offset=i) for i, r in enumerate(_ROWS)]
    assert store_rows(store, rows) == len(rows)
    store.dispose()
