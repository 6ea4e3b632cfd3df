"""The wire format (DESIGN.md section 2): CloudEvents Kafka binding, binary mode.

`encode_headers` builds the record headers for an `Event`. Only headers with a value are
written, and `content-type` only when the data is not JSON: kafka-python's per-header
encoding is a large share of the cost of a send.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any

from .errors import UsageError
from .event import Event

SPECVERSION = "ce_specversion"
ID = "ce_id"
TYPE = "ce_type"
SOURCE = "ce_source"
TIME = "ce_time"
SUBJECT = "ce_subject"
SCHEMAVERSION = "ce_schemaversion"
CORRELATIONID = "ce_correlationid"
CAUSATIONID = "ce_causationid"
SEQUENCE = "ce_sequence"
CONTENT_TYPE = "content-type"
# content types declared for values that are not JSON (a record without one is JSON)
OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain; charset=utf-8"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_SPEC_1_0 = b"1.0"

Headers = list[tuple[str, bytes]]


def encode_headers(
    event: Event,
    traceparent: str | None = None,
    tracestate: str | None = None,
    content_type: str | None = None,
) -> Headers:
    """The binary-mode headers of `event` (values UTF-8), plus the W3C trace context."""
    headers: Headers = [(SPECVERSION, _SPEC_1_0)]
    append = headers.append
    if event.id:
        append((ID, event.id.encode()))
    if event.type:
        append((TYPE, event.type.encode()))
    if event.source:
        append((SOURCE, event.source.encode()))
    if event.time:
        append((TIME, event.time.encode()))
    if event.subject:
        append((SUBJECT, event.subject.encode()))
    if event.schema_version:
        append((SCHEMAVERSION, event.schema_version.encode()))
    if event.correlation_id:
        append((CORRELATIONID, event.correlation_id.encode()))
    if event.causation_id:
        append((CAUSATIONID, event.causation_id.encode()))
    if event.sequence is not None:
        append((SEQUENCE, str(event.sequence).encode()))
    if content_type:
        append((CONTENT_TYPE, content_type.encode()))
    if traceparent:
        append((TRACEPARENT, traceparent.encode()))
    if tracestate:
        append((TRACESTATE, tracestate.encode()))
    return headers


def trace_headers(traceparent: str | None, tracestate: str | None = None) -> Headers:
    """Only the W3C trace context headers: for a record whose value carries its envelope
    (CloudEvents structured mode, a hand-written envelope), which binary-mode headers
    beside it would contradict."""
    headers: Headers = []
    if traceparent:
        headers.append((TRACEPARENT, traceparent.encode()))
        if tracestate:
            headers.append((TRACESTATE, tracestate.encode()))
    return headers


def encode_value(data: Any) -> tuple[bytes | None, str | None]:
    """The record value for `data` and the content type to declare (None means JSON).

    bytes go as they are (declared `application/octet-stream`), str as UTF-8 text
    (`text/plain`), None as a tombstone, anything else as compact JSON.
    """
    if data is None:
        return None, None
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), OCTET_STREAM
    if isinstance(data, str):
        return data.encode(), TEXT_PLAIN
    return json_bytes(data), None


_JSON_OPENERS = (b"{", b"[")


def is_json(data: bytes) -> bool:
    """Whether record value bytes are JSON (an object or array is taken by its first byte;
    a string, number or literal is parsed): such values are sent with no content type."""
    if data[:1] in _JSON_OPENERS or data.lstrip()[:1] in _JSON_OPENERS:
        return True
    try:
        json.loads(data, parse_constant=refuse_constant)
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


def key_text(raw: bytes) -> str:
    """Record key bytes as text: their UTF-8 text when it is printable, else their hex (a
    binary id, a hash). Decoding such bytes with replacement characters made different keys
    one text, and their control bytes reached terminals."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() else raw.hex()


def decimal_int(text: str) -> int:
    """`int` of decimal ASCII digits (a sign and spaces around allowed), else ValueError:
    `int` alone also reads `1_000` and other scripts' digits, which no producer means as a
    sequence number."""
    if not text.isascii() or "_" in text:
        raise ValueError(text)
    return int(text)


def refuse_constant(name: str) -> Any:
    """`parse_constant` for `json`: NaN and Infinity are not JSON (RFC 8259), although
    Python's json reads them."""
    raise ValueError(f"{name} is not JSON")


def json_bytes(data: Any) -> bytes:
    """Compact JSON of event data (see `json_default`); NaN and infinities, which JSON has no
    numbers for (a consumer's parser refuses them), raise `UsageError`."""
    try:
        return json.dumps(data, separators=(",", ":"), default=json_default,
                          allow_nan=False).encode()
    except ValueError as exc:  # NaN / Infinity, or a container holding itself
        raise UsageError(f"cannot send this as JSON event data: {exc} (send null or a string "
                         "instead of NaN or an infinity)") from None


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for event data: the values JSON has no type for.

    Times and dates as ISO 8601 text (`2026-01-02T03:04:05+00:00`), UUIDs and Decimals as
    text (no precision lost), enums as their value, sets as lists. Anything else raises
    `UsageError`: its `str()` (`<object object at 0x...>`) is no data for a consumer.
    """
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    raise UsageError(
        f"cannot send a value of type {type(value).__name__} as JSON event data: give str, "
        "int, float, bool, None, dict, list, or a datetime, date, UUID, Decimal, enum or set"
    )
