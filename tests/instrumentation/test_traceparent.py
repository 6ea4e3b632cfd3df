"""parse_traceparent and format_traceparent against every W3C Trace Context rule."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from choreoscope.instrumentation.traceparent import (
    InvalidTraceparent,
    TraceParent,
    format_traceparent,
    parse_traceparent,
    remote_context,
    remote_context_of,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_version_00() -> None:
    """A well-formed version-00 value parses into ids and flags."""
    parsed = parse_traceparent(VALID)
    assert parsed == TraceParent(TRACE, SPAN, 1)
    assert parsed.sampled


def test_flags_not_sampled() -> None:
    """Flags 00 mean not sampled; other flag bits are kept."""
    assert not parse_traceparent(f"00-{TRACE}-{SPAN}-00").sampled
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03").flags == 3


def test_future_version_may_append_fields() -> None:
    """A later version may carry more dash-separated fields after the flags."""
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-extra-data") == TraceParent(TRACE, SPAN, 1)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-00") == TraceParent(TRACE, SPAN, 0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"ff-{TRACE}-{SPAN}-01", "version ff is invalid"),
        (f"00-{TRACE}-{SPAN}-01-", "version 00 must be exactly 55 characters"),
        (f"00-{TRACE}-{SPAN}-01-extra", "version 00 must be exactly 55 characters"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace id is all zeros"),
        (f"00-{TRACE}-{'0' * 16}-01", "parent id is all zeros"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "uppercase hex is not allowed"),
        (f"00-{TRACE}-{SPAN.upper()}-01", "uppercase hex is not allowed"),
        (f"0A-{TRACE}-{SPAN}-01", "uppercase hex is not allowed"),
        (f"00-{TRACE}-{SPAN}-0F", "uppercase hex is not allowed"),
        (f" {VALID}", "surrounding whitespace"),
        (f"{VALID}\n", "surrounding whitespace"),
        (f"00-{TRACE}-{SPAN}", "expected 4 dash-separated fields, got 3"),
        ("", "expected 4 dash-separated fields, got 1"),
        (f"0-{TRACE}-{SPAN}-01", "expected field lengths 2-32-16-2, got 1-32-16-2"),
        (f"00-{TRACE}0-{SPAN}-01", "expected field lengths 2-32-16-2, got 2-33-16-2"),
        (f"00-{TRACE}-{SPAN[:-1]}-01", "expected field lengths 2-32-16-2, got 2-32-15-2"),
        (f"00-{TRACE}-{SPAN}-1", "expected field lengths 2-32-16-2, got 2-32-16-1"),
        (f"00_{TRACE}_{SPAN}_01", "expected 4 dash-separated fields, got 1"),
        (f"00-{TRACE[:-1]}g-{SPAN}-01", "non-hex characters"),
        (f"zz-{TRACE}-{SPAN}-01", "non-hex characters"),
        (f"01-{TRACE}-{SPAN}-01extra", "expected field lengths 2-32-16-2, got 2-32-16-7"),
    ],
)
def test_invalid(value: str, reason: str) -> None:
    """Every W3C rule violation is rejected with the reason in the message."""
    with pytest.raises(InvalidTraceparent, match=f"^{reason}$"):
        parse_traceparent(value)


def test_not_a_string() -> None:
    """A non-string value is rejected with 'expected a string, got ...'."""
    with pytest.raises(InvalidTraceparent, match="expected a string, got bytes"):
        parse_traceparent(VALID.encode())  # type: ignore[arg-type]


def test_invalid_is_a_value_error() -> None:
    """InvalidTraceparent is a ValueError, so callers can catch the built-in."""
    assert issubclass(InvalidTraceparent, ValueError)


def test_format_round_trip() -> None:
    """format_traceparent writes zero-padded lowercase hex that parses back to the same ids."""
    text = format_traceparent(0x1, 0x2, 1)
    assert text == f"00-{'0' * 31}1-{'0' * 15}2-01"
    assert parse_traceparent(text) == TraceParent("0" * 31 + "1", "0" * 15 + "2", 1)
    assert format_traceparent(int(TRACE, 16), int(SPAN, 16), 0) == f"00-{TRACE}-{SPAN}-00"


def test_remote_context_of_a_checked_value_matches_remote_context() -> None:
    """remote_context_of reads a valid value's fields in place: the same remote parent."""
    for value, state in ((VALID, None), (f"01-{TRACE}-{SPAN}-00-future", "k=v")):
        fast = trace.get_current_span(remote_context_of(value, state)).get_span_context()
        slow = trace.get_current_span(
            remote_context(parse_traceparent(value), state)
        ).get_span_context()
        assert fast == slow
        assert (fast.trace_id, fast.span_id, fast.is_remote) == (
            int(TRACE, 16),
            int(SPAN, 16),
            True,
        )
