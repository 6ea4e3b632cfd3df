"""tracestate_problem against every W3C Trace Context `tracestate` rule, and in agreement with
the OpenTelemetry API's own parser (`TraceState.from_header`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import TraceState

from choreoscope.instrumentation.tracestate import MAX_CHARS, tracestate_problem

KEY_256 = "k" * 256
VALUE_256 = "v" * 256


@pytest.mark.parametrize("value", [
    "",
    "rojo=00f067aa0ba902b7",
    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    "rojo=00f067aa0ba902b7 ,\tcongo=t61rcWkgMzE",  # spaces and tabs around members
    " , ,rojo=1,,",  # empty and blank members
    "fw529a3039@dt=1",  # multi-tenant: tenant@system
    "0tenant@sys-1*/_=x",  # a tenant may start with a digit
    "a_0-*/=x y",  # every key character; a space inside a value
    "a=!\"#$%&'()*+-./0123456789:;<>?@[\\]^_`{|}~",  # every value character but , and =
    f"{KEY_256}={VALUE_256}",  # the longest key and value
    ",".join(f"k{i}=v" for i in range(32)),  # 32 members
    " , ".join(f"{KEY_256[:-2]}{i:02d}={VALUE_256}" for i in range(32)),  # the longest list
])
def test_valid(value: str) -> None:
    assert tracestate_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), [
    ("rojo", "list member 'rojo' is not key=value"),
    ("rojo=1,congo", "list member 'congo' is not key=value"),
    ("Rojo=1", "'Rojo' is not a tracestate key"),
    ("1rojo=1", "'1rojo' is not a tracestate key"),
    ("=1", "'' is not a tracestate key"),
    ("ro jo=1", "'ro jo' is not a tracestate key"),
    ("rojo.1=1", "'rojo.1' is not a tracestate key"),
    ("k" * 257 + "=1", f"{'k' * 40!r}... is not a tracestate key"),
    ("t@1sys=1", "'t@1sys' is not a tracestate key"),  # a system starts with a letter
    ("t@system-is-too-long=1", "'t@system-is-too-long' is not a tracestate key"),
    ("t" * 242 + "@s=1", f"{'t' * 40!r}... is not a tracestate key"),
    ("a@b@c=1", "'a@b@c' is not a tracestate key"),
    ("rojo=", "the value of 'rojo' is not a tracestate value"),
    ("rojo=a=b", "the value of 'rojo' is not a tracestate value"),
    ("rojo=caf\u00e9", "the value of 'rojo' is not a tracestate value"),
    ("rojo=a\x7f", "the value of 'rojo' is not a tracestate value"),
    ("rojo=a\x01", "the value of 'rojo' is not a tracestate value"),
    ("rojo=" + "v" * 257, "the value of 'rojo' is not a tracestate value"),
    ("rojo=1,rojo=2", "key 'rojo' appears twice"),
    (",".join(f"k{i}=v" for i in range(33)), "more than 32 list members"),
    ("a=1" + " " * MAX_CHARS, f"{MAX_CHARS + 3} characters, more than a valid list can have "
                               f"({MAX_CHARS})"),
])
def test_invalid(value: str, problem: str) -> None:
    assert tracestate_problem(value) == problem


def test_a_value_ending_in_a_space_is_trimmed_with_the_member() -> None:
    # Trailing spaces belong to the optional whitespace around the member, so "a=1 " is
    # valid; a space inside the value is kept.
    assert tracestate_problem("a=1 ") is None
    assert tracestate_problem("a=1 2") is None


# Lists built from pieces that are valid and invalid in every position.
_keys = st.sampled_from(["a", "rojo", "congo", "t@s", "0t@s", "Rojo", "1a", "a.b", "", "a@1",
                         "k" * 256, "k" * 257, "x/y*z_-"])
_values = st.sampled_from(["1", "v v", "", "a=b", "é", "x\x7f", "~!", "v" * 256, "v" * 257,
                           "tail "])
_member = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", _keys, _values),
    st.sampled_from(["", " ", "\t", "novalue"]),
)
_lists = st.builds(lambda members, sep: sep.join(members),
                   st.lists(_member, max_size=36), st.sampled_from([",", " , ", ",\t"]))


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(_lists)
def test_agrees_with_opentelemetry(value: str) -> None:
    """What we accept, OpenTelemetry's parser reads to the same members; what we reject, it
    discards as a whole."""
    parsed = TraceState.from_header([value])
    if tracestate_problem(value) is None:
        members = [m.strip(" \t") for m in value.split(",")]
        expected = [tuple(m.split("=", 1)) for m in members if m]
        assert list(parsed.items()) == expected
    else:
        assert len(parsed) == 0
