"""Redaction and the size cap of stored data."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from choreoscope.collector.ingest.redact import REDACTED, Redactor


def test_nested_keys_and_dicts_inside_lists_are_redacted() -> None:
    """Matching keys are redacted at any depth, case-insensitively, also in dicts in lists."""
    data = {
        "order": "ord_1",
        "Customer": {"EMAIL": "a@b.c", "name": "Ann", "contact": {"mobilePhone": "+41"}},
        "payments": [{"cardNumber": "4111", "amount": 3}, {"amount": 4, "Token": {"x": 1}}],
        "items": [[{"password": "p"}], "secret-looking value stays"],
    }
    text, truncated = Redactor().data_json(data)
    assert truncated is False
    assert json.loads(text) == {
        "order": "ord_1",
        "Customer": {"EMAIL": REDACTED, "name": "Ann", "contact": {"mobilePhone": REDACTED}},
        "payments": [{"cardNumber": REDACTED, "amount": 3}, {"amount": 4, "Token": REDACTED}],
        "items": [[{"password": REDACTED}], "secret-looking value stays"],
    }


def test_clean_data_is_stored_unchanged() -> None:
    """Data with no matching key is stored as compact JSON, untouched."""
    text, truncated = Redactor().data_json({"a": [1, {"b": "ü"}], "c": None})
    assert (text, truncated) == ('{"a":[1,{"b":"ü"}],"c":null}', False)


def test_custom_pattern_replaces_the_default() -> None:
    """A configured pattern redacts its keys and no longer the default ones."""
    text, _ = Redactor(pattern=r"^iban$").data_json({"IBAN": "CH93", "email": "a@b.c"})
    assert json.loads(text) == {"IBAN": REDACTED, "email": "a@b.c"}


def test_large_data_keeps_a_truncation_marker_without_redacted_values() -> None:
    """Data over the cap becomes a marker with its size and a preview cut from redacted JSON."""
    data = {"password": "hunter2", "blob": "x" * 5000}
    text, truncated = Redactor(max_bytes=1000).data_json(data)
    marker = json.loads(text)
    full = json.dumps({"password": REDACTED, "blob": "x" * 5000}, separators=(",", ":"))
    assert truncated is True
    assert marker == {"_truncated": True, "size": len(full), "preview": full[:1024]}
    assert "hunter2" not in text


def test_data_exactly_at_the_cap_is_kept() -> None:
    """Data whose JSON is exactly the cap is stored whole."""
    data = "y" * 98  # JSON string of 100 bytes
    assert Redactor(max_bytes=100).data_json(data) == (json.dumps(data), False)


def test_cap_counts_utf8_bytes() -> None:
    """The cap is in bytes of UTF-8, not characters."""
    _, truncated = Redactor(max_bytes=100).data_json("é" * 60)
    assert truncated is True


def test_bytes_none_and_text() -> None:
    """Binary data is stored as base64, None as no data, text as a JSON string."""
    r = Redactor()
    assert r.data_json(b"\xff\x00") == ('{"_base64":"/wA="}', False)
    assert r.data_json(None) == (None, False)
    assert r.data_json("plain text") == ('"plain text"', False)


def test_header_values_of_matching_names_are_redacted() -> None:
    """Header values whose names match the pattern never reach the store."""
    text = Redactor().headers_json({"ce_id": "e1", "X-Auth-Token": "abc", "card": "4111"})
    assert json.loads(text) == {"ce_id": "e1", "X-Auth-Token": REDACTED, "card": REDACTED}
    assert Redactor().headers_json({}) is None


def test_raw_headers_first_value_wins_and_none_values_are_left_out() -> None:
    """Raw (name, bytes) pairs: repeated names keep the first value, None values are dropped."""
    r = Redactor()
    pairs = [("a", b"1"), ("a", b"2"), ("b", None), ("Token", b"t"), ("c", b"\xff")]
    expected = '{"a":"1","Token":"[REDACTED]","c":"\ufffd"}'
    assert r.headers_json(pairs) == expected
    assert r.headers_json(iter(pairs)) == expected
    assert r.headers_json([("ce_id", b"e1"), ("ce_type", b"x.y")]) == '{"ce_id":"e1","ce_type":"x.y"}'
    assert r.headers_json([("b", None)]) is None


def test_values_orjson_cannot_encode_fall_back_to_the_stdlib() -> None:
    """Integers beyond 64 bits and NaN are stored as the standard library writes them."""
    assert Redactor().data_json({"n": 1 << 70}) == ('{"n":1180591620717411303424}', False)
    assert Redactor().data_json([float("nan")]) in (("[NaN]", False), ("[null]", False))


def test_a_key_spelled_with_escapes_is_redacted() -> None:
    """`"em\\u0061il"` is the key `email`: found although the raw text does not spell it."""
    raw = b'{"em\\u0061il":"a@b.c","n":1}'
    text, _ = Redactor().data_json(json.loads(raw), raw)
    assert json.loads(text) == {"email": REDACTED, "n": 1}


_KEYS = st.sampled_from(["a", "Email", "x_token", "cardNumber", "name", "PHONE", "t", "secret"])
_SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(alphabet="aEm il:\"{}[],\\é", max_size=8))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(_KEYS, _JSON, max_size=4) | st.lists(_JSON, max_size=3), spacing=st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]))
def test_stored_text_of_raw_json_is_the_redacted_data(data, spacing) -> None:
    """Whatever the raw JSON looks like, the stored text parses to the redacted data."""
    r = Redactor(max_bytes=1 << 20)
    raw = json.dumps(data, separators=spacing, ensure_ascii=False).encode()
    text, _ = r.data_json(json.loads(raw), raw)
    assert json.loads(text) == json.loads(json.dumps(r.redact(data)))


WITHHELD = ("not JSON that redaction can walk, and it may hold a field the redaction "
            "pattern matches")


def _withheld(value: str | bytes) -> tuple[str, bool]:
    size = len(value if isinstance(value, bytes) else value.encode())
    return json.dumps({"_withheld": True, "size": size, "reason": WITHHELD},
                      separators=(",", ":")), True


def test_text_python_reads_as_json_is_withheld_when_a_key_matches() -> None:
    """NaN and Infinity (refused by the decoder, read by Python's json), a JSON document
    inside a JSON string, escaped keys, UTF-16/32 bytes: withheld when one of their keys
    matches, stored as before when none does."""
    r = Redactor()
    for value in ('{"order_id": "o1", "customer": {"email": "a@x"}, "x": NaN}',
                  '[{"token": "t", "v": -Infinity}]',
                  json.dumps({"password": "p", "n": 1}),
                  '{"em\\u0061il": "a@x"}', '{"em\\u0061il": "a@x", "x": NaN}',
                  '{"email": "a@x"}'.encode("utf-16-le"),
                  '{"email": "a@x"}'.encode("utf-32"),
                  b'{"em\\u0061il": "a@x"}'):
        assert r.data_json(value) == _withheld(value), value
    assert r.data_json('{"x": NaN}') == (json.dumps('{"x": NaN}'), False)
    anchored = Redactor(r"^email$|^token$")
    assert anchored.data_json('{"email": "a@x", "x": NaN}') == _withheld(
        '{"email": "a@x", "x": NaN}')
    assert anchored.data_json("{'token': 't'}") == _withheld("{'token': 't'}")
    assert anchored.data_json("token=t, user=u") == _withheld("token=t, user=u")
    assert anchored.data_json("tokens are fine") == ('"tokens are fine"', False)
    assert anchored.data_json('{"emails": 1, "x": NaN}') == (
        json.dumps('{"emails": 1, "x": NaN}'), False)


def test_text_or_bytes_that_cannot_be_walked_are_withheld_when_the_pattern_matches() -> None:
    """Text Python's json cannot read (trailing comma, a Python dict, a sentence) and bytes
    are withheld behind a marker once the pattern matches anywhere in them; without a match
    they are stored as before."""
    r = Redactor()
    for text in ('{"email": "a@x",}', "{'password': 'p'}", "my token is 42",
                 '"{\\"email\\": \\"a\\"}"', "email:" + "1" * 5000):
        assert r.data_json(text) == _withheld(text), text
    assert r.data_json("plain text") == ('"plain text"', False)
    assert r.data_json("C:\\Users\\x") == (json.dumps("C:\\Users\\x"), False)
    assert r.data_json(b"\xff\xfe\x00binary") == ('{"_base64":"//4AYmluYXJ5"}', False)
    assert r.data_json('{"a": 1,}') == (json.dumps('{"a": 1,}'), False)
    assert Redactor("ssn").data_json("my token is 42") == ('"my token is 42"', False)


def test_keys_that_fold_into_the_pattern_are_redacted_from_raw_values() -> None:
    """Case-insensitive matching folds some non-ASCII letters into ASCII ones (long s,
    Kelvin sign, dotted capital I): such keys are redacted although the value's lower-cased
    bytes hold no pattern word; a UTF-16 value is never stored as it came."""
    r = Redactor()
    for key in ("pa\u017f\u017fword", "to\u212aen", "EMA\u0130L"):
        raw = json.dumps({key: "s3cret"}, ensure_ascii=False).encode()
        assert json.loads(r.data_json(json.loads(raw), raw)[0]) == {key: REDACTED}, key
    utf16 = '{"email": "a@x"}'.encode("utf-16-le")
    assert json.loads(r.data_json({"email": "a@x"}, utf16)[0]) == {"email": REDACTED}
    clean = b'{"sku": "A-1", "qty": 2}'
    assert r.data_json(json.loads(clean), clean) == (clean.decode(), False)  # as it came


def _nested(levels: int) -> dict:
    data: dict = {"email": "a@x"}
    for _ in range(levels):
        data = {"k": data}
    return data


def _at_stack_depth(frames: int, call):
    return call() if frames == 0 else _at_stack_depth(frames - 1, call)


def test_data_nested_too_deep_to_walk_is_withheld_whatever_the_callers_stack() -> None:
    """Beyond MAX_DEPTH levels data is not walked: a marker, the same at any stack depth
    (before, the writer process and the ingest could store the same record differently)."""
    from choreoscope.collector.ingest.redact import MAX_DEPTH

    r = Redactor()
    deep = _nested(MAX_DEPTH + 1)
    raw = json.dumps(deep).encode()
    marker = json.dumps({"_withheld": True, "size": len(raw),
                         "reason": f"nested deeper than {MAX_DEPTH} levels"},
                        separators=(",", ":"))
    for frames in (0, 250, 500):  # the ingest and the writer call from 30-60 frames
        assert _at_stack_depth(frames, lambda: r.data_json(deep, raw)) == (marker, True)
        assert json.loads(_at_stack_depth(frames, lambda: r.data_json(_nested(980))[0]))[
            "_withheld"] is True
    ok = _nested(MAX_DEPTH - 1)
    assert json.loads(r.data_json(ok)[0]) == json.loads(json.dumps(ok).replace(
        '"a@x"', '"[REDACTED]"'))
    clean_raw = ("[" * 990 + '"x"' + "]" * 990).encode()
    clean = orjson.loads(clean_raw)  # what the decoder hands over
    assert r.data_json(clean, clean_raw) == (clean_raw.decode(), False)  # nothing to redact
    assert json.loads(r.data_json("[" * 990 + '"email"' + "]" * 990)[0])["reason"] == (
        f"nested deeper than {MAX_DEPTH} levels")
