"""Strict W3C Trace Context `traceparent` parsing and formatting.

https://www.w3.org/TR/trace-context/#traceparent-header: `version-traceid-parentid-flags`,
lowercase hex only; version `ff` is invalid; version `00` has exactly 55 characters; a
future version may append `-...` fields after the flags; trace and parent ids are never
all zeros.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

# fullmatch, not `$`: a trailing newline is not allowed either.
_FORMAT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_V00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").fullmatch


class InvalidTraceparent(ValueError):
    """A `traceparent` value that W3C Trace Context rejects; the message says why."""


class TraceParent(NamedTuple):
    trace_id: str
    """32 lowercase hex characters."""
    span_id: str
    """16 lowercase hex characters."""
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


def parse_traceparent(value: str) -> TraceParent:
    """Parse a `traceparent` header value, raising `InvalidTraceparent` with the reason."""
    if not isinstance(value, str):
        raise InvalidTraceparent(f"expected a string, got {type(value).__name__}")
    if _V00(value) is not None:  # the common case: a well-formed version 00
        return _checked(value[3:35], value[36:52], value[53:55])
    match = _FORMAT.fullmatch(value)
    if match is None:
        raise InvalidTraceparent(_why_malformed(value))
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        raise InvalidTraceparent("version ff is invalid")
    if version == "00" and rest is not None:
        raise InvalidTraceparent("version 00 must be exactly 55 characters")
    return _checked(trace_id, span_id, flags)


def _checked(trace_id: str, span_id: str, flags: str) -> TraceParent:
    if trace_id == "0" * 32:
        raise InvalidTraceparent("trace id is all zeros")
    if span_id == "0" * 16:
        raise InvalidTraceparent("parent id is all zeros")
    return TraceParent(trace_id, span_id, int(flags, 16))


def _why_malformed(value: str) -> str:
    if value != value.strip():
        return "surrounding whitespace"
    if any(c in "ABCDEF" for c in value):
        return "uppercase hex is not allowed"
    parts = value.split("-")
    if len(parts) < 4:
        return f"expected 4 dash-separated fields, got {len(parts)}"
    lengths = [len(p) for p in parts[:4]]
    if lengths != [2, 32, 16, 2]:
        return f"expected field lengths 2-32-16-2, got {'-'.join(map(str, lengths))}"
    return "non-hex characters"


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The version-00 `traceparent` for integer ids (as OpenTelemetry's SpanContext holds them)."""
    try:  # bytes to hex is about twice as fast as formatting a 128-bit int
        return (
            f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}"
            f"-{_FLAGS[flags]}"
        )
    except (AttributeError, KeyError, OverflowError, TypeError):  # out of range: as it is
        return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


_FLAGS = {flags: f"{flags:02x}" for flags in range(256)}


def remote_context(
    parent: TraceParent, tracestate: str | None = None, base: Context | None = None
) -> Context:
    """A context (`base`, default empty) whose current span is the remote `parent`.

    A `tracestate` OpenTelemetry cannot read is dropped; the parent is kept.
    """
    return _remote(
        int(parent.trace_id, 16), int(parent.span_id, 16), parent.flags, tracestate, base
    )


def remote_context_of(value: str, tracestate: str | None = None) -> Context:
    """`remote_context` for a `traceparent` already checked valid (the decoder keeps no other).

    The ids are read at their fixed places (`version-trace-parent-flags[-...]`), in a new
    empty context.
    """
    return _remote(int(value[3:35], 16), int(value[36:52], 16), int(value[53:55], 16), tracestate)


def _remote(
    trace_id: int, span_id: int, flags: int, tracestate: str | None, base: Context | None = None
) -> Context:
    try:
        state = TraceState.from_header([tracestate]) if tracestate else None
    except Exception:  # noqa: BLE001 - a bad tracestate never costs the parent
        state = None
    remote = SpanContext(trace_id, span_id, True, TraceFlags(flags & 0xFF), state)
    return trace.set_span_in_context(
        NonRecordingSpan(remote), base if base is not None else Context()
    )
