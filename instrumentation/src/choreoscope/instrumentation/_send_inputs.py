"""What a caller hands to `send`: its own headers, its key, a stored `traceparent`.

Helpers of `producer.py`, apart so that the producer module reads as the send path.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from . import wire
from .decoder import decode_record
from .event import Event
from .traceparent import InvalidTraceparent, parse_traceparent, remote_context

_log = logging.getLogger("choreoscope.instrumentation")

# Caller headers that set an envelope field: header name -> Event attribute.
_HEADER_FIELDS = {
    wire.ID: "id",
    wire.TYPE: "type",
    wire.SOURCE: "source",
    wire.TIME: "time",
    wire.SUBJECT: "subject",
    wire.SCHEMAVERSION: "schema_version",
    wire.CORRELATIONID: "correlation_id",
    wire.CAUSATIONID: "causation_id",
}


def merge_headers(caller: list[Any], ours: list[tuple[str, bytes]]) -> list[Any]:
    """The caller's headers, then ours that the caller did not set (names case-insensitive),
    except trace context: when ours has a `traceparent`, the caller's `traceparent` and
    `tracestate` (which parented our span) give way to it."""
    taken = set()
    replace_trace = any(h[0] == wire.TRACEPARENT for h in ours)
    kept = []
    for item in caller:
        # A malformed item is kept as it is here: kafka-python rejects the list.
        try:
            name = item[0].lower()
        except (AttributeError, IndexError, TypeError):
            kept.append(item)
            continue
        if replace_trace and name in _TRACE_HEADERS:
            continue
        taken.add(name)
        kept.append(item)
    kept.extend(h for h in ours if h[0] not in taken)
    return kept


_TRACE_HEADERS = (wire.TRACEPARENT, wire.TRACESTATE)


def read_caller_headers(headers: list[Any], event: Event) -> tuple[str | None, str | None]:
    """Copy the caller's `ce_*` values into `event`; return the caller's `traceparent` and
    `tracestate`, each None when absent."""
    traceparent = tracestate = None
    for item in headers:
        try:
            name, raw = item
        except (TypeError, ValueError):
            continue
        if type(name) is not str:  # kafka-python rejects the list with its own message
            continue
        name = name.lower()
        if name.startswith("ce_") or name in _TRACE_HEADERS:
            text = _text(raw)
            if text is None:
                continue
            if name == wire.TRACEPARENT:
                traceparent = text
            elif name == wire.TRACESTATE:
                tracestate = text
            elif name in _HEADER_FIELDS:
                setattr(event, _HEADER_FIELDS[name], text)
            elif name == wire.SEQUENCE:
                with contextlib.suppress(ValueError):
                    event.sequence = wire.decimal_int(text)  # as the decoder reads it
    return traceparent, tracestate


def _text(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "replace")
    return None


def serializers(producer: Any) -> tuple[bool, bool]:
    """Whether kafka-python `producer` has a value serializer, and a key serializer.

    Values and keys for such a producer go to it as the caller's objects, never as our bytes.
    """
    config = getattr(producer, "config", None)
    if not isinstance(config, dict):
        return False, False
    return config.get("value_serializer") is not None, config.get("key_serializer") is not None


def key_as_text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, str):
        return key
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key).decode("utf-8", "replace")
    return str(key)


def context_from_traceparent(value: str, tracestate: str | None) -> Context | None:
    """A context whose current span is the remote one `value` names; None (logged) if invalid."""
    try:
        parsed = parse_traceparent(value)
    except InvalidTraceparent as exc:
        _log.warning("choreoscope: ignoring an invalid traceparent %r: %s", value, exc)
        return None
    return remote_context(parsed, tracestate, otel_context.get_current())


# Keys whose presence in a JSON value may mean it carries its own envelope, and a search for
# them as they appear in JSON text: a value without any is decided by that one search.
_ENVELOPE_KEYS = ("specversion", "eventId", "event_id", "eventType", "event_type")
_ENVELOPE_MARKER = re.compile(f'"(?:{"|".join(_ENVELOPE_KEYS)})"'.encode()).search
CARRIED = ("structured", "json_envelope")


def carried_envelope(value: Any) -> Event | None:
    """The envelope `value` already carries, decoded: a CloudEvents structured-mode JSON
    object or the hand-written JSON envelope (the decoder's reading). None for any other
    value: data of its own, to which `send` adds the binary-mode headers."""
    if type(value) is dict:  # for a value_serializer: the decoder reads the dict as it is
        if not any(k in value for k in _ENVELOPE_KEYS):
            return None
    elif type(value) is bytes:
        if value[:1] != b"{" or _ENVELOPE_MARKER(value) is None:
            return None
    else:
        return None
    event = decode_record(None, value)
    return event if event.envelope in CARRIED else None
