"""The normalised span: what every trace source turns its spans into before storing them."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ingest.redact import REDACTED
from ..store.text import clean_text, cut_id, without_surrogates

KINDS = ("internal", "server", "client", "producer", "consumer")
STATUSES = ("unset", "ok", "error")

# Attribute keys that fill columns, current semantic-convention name first, older ones after.
_MESSAGE_ID = ("messaging.message.id", "messaging.message_id")
_CONVERSATION_ID = ("messaging.message.conversation_id", "messaging.conversation_id")
_CONSUMER_GROUP = ("messaging.consumer.group.name", "messaging.kafka.consumer.group")
_DESTINATION = ("messaging.destination.name", "messaging.destination")
_PARTITION = ("messaging.destination.partition.id", "messaging.kafka.destination.partition",
              "messaging.kafka.partition")
_OFFSET = ("messaging.kafka.offset", "messaging.kafka.message.offset")
_ERROR_TYPE = "error.type"
_OUT_OF_ORDER = "choreoscope.out_of_order"
_HANDLER_SERVICE = "choreoscope.service"  # traced_consumer(service=...)

# The latest time a span may have: 9999-12-31T23:59:59.999999Z (the last a datetime can show).
MAX_TIME_US = 253_402_300_799_999_999


class SpanFormatError(ValueError):
    """A span (or a batch of them) that cannot be normalised; the message says why."""


@dataclass
class Span:
    """One span, normalised: lowercase hex ids, lowercase kind/status, times in microseconds."""

    trace_id: str
    span_id: str
    name: str
    kind: str = "internal"
    parent_span_id: str | None = None
    service: str | None = None
    start_us: int = 0
    duration_us: int = 0
    status: str = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def message_id(self) -> str | None:
        return _text(_first(self.attributes, _MESSAGE_ID))

    @property
    def conversation_id(self) -> str | None:
        return _text(_first(self.attributes, _CONVERSATION_ID))

    @property
    def consumer_group(self) -> str | None:
        return _text(_first(self.attributes, _CONSUMER_GROUP))

    @property
    def destination(self) -> str | None:
        return _text(_first(self.attributes, _DESTINATION))

    @property
    def partition(self) -> int | None:
        return _int(_first(self.attributes, _PARTITION))

    @property
    def offset(self) -> int | None:
        return _int(_first(self.attributes, _OFFSET))

    @property
    def out_of_order(self) -> bool:
        value = self.attributes.get(_OUT_OF_ORDER)
        return value is True or (isinstance(value, str) and value.lower() == "true")

    @property
    def error_type(self) -> str | None:
        """`error.type`, else the type of the first exception event."""
        value = _text(self.attributes.get(_ERROR_TYPE))
        if value:
            return value
        for ev in self.events:
            if ev.get("name") == "exception":
                exc_type = _text(ev.get("attributes", {}).get("exception.type"))
                if exc_type:
                    return exc_type
        return None

    def row(self, *, origin: str, received_at_ms: int,
            redact: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """The `spans` table row for this span; the attributes (of the span, its events and
        links) whose key `redact` matches are stored as "[REDACTED]". The columns filled from
        attributes (message id, group, ...) keep their values: they place the span."""
        attributes, events, links = self.attributes, self.events, self.links
        if redact is not None:
            attributes = _redacted(attributes, redact)
            events = [_with_redacted_attributes(item, redact) for item in events]
            links = [_with_redacted_attributes(item, redact) for item in links]
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": _clip(self.name, 255) or "",
            "kind": self.kind,
            # The handler's own service name, when the instrumentation gave one, wins over
            # the process's: one tracer provider may serve several services' handlers.
            "service": _clip_id(_text(self.attributes.get(_HANDLER_SERVICE)) or self.service,
                                255),
            "start_us": _bounded(self.start_us, _INT64) or 0,
            "duration_us": _bounded(self.duration_us, _INT64) or 0,
            "status": self.status,
            "status_message": _clip(self.status_message, 10_000),
            "error_type": _clip(self.error_type, 255),
            "message_id": _clip_id(self.message_id, 128),
            "conversation_id": _clip_id(self.conversation_id, 128),
            "consumer_group": _clip(self.consumer_group, 255),
            "destination": _clip(self.destination, 255),
            "partition": _bounded(self.partition, _INT32),
            "offset": _bounded(self.offset, _INT64),
            "out_of_order": self.out_of_order,
            "attributes": _to_json(attributes) if attributes else "{}",
            "links": _to_json(links) if links else "[]",
            "events": _to_json(events) if events else "[]",
            "origin": origin,
            "received_at_ms": received_at_ms,
        }


def _redacted(attributes: dict[str, Any], redact: Callable[[str], bool]) -> dict[str, Any]:
    """`attributes` with the values of the keys `redact` matches replaced, at any depth of
    kvlist and array values, as event payloads are (the same dict when none matches)."""
    kept = _redacted_value(attributes, redact, 0)
    return kept if isinstance(kept, dict) else attributes


# Deeper than this a value is not walked but replaced: it cannot be shown safe.
_MAX_DEPTH = 64


def _redacted_value(value: Any, redact: Callable[[str], bool], depth: int) -> Any:
    """`value` with matching keys redacted; the same object when nothing changed."""
    if not isinstance(value, dict | list):
        return value
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, list):
        items = [_redacted_value(v, redact, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    out = {k: REDACTED if isinstance(k, str) and redact(k)
           else _redacted_value(v, redact, depth + 1) for k, v in value.items()}
    return value if all(out[k] is v for k, v in value.items()) else out


def _with_redacted_attributes(item: Any, redact: Callable[[str], bool]) -> Any:
    """A span event or link with its attributes redacted."""
    attributes = item.get("attributes") if isinstance(item, dict) else None
    if not isinstance(attributes, dict):
        return item
    kept = _redacted(attributes, redact)
    return item if kept is attributes else {**item, "attributes": kept}


# One encoder for every row (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(sort_keys=True, default=str, allow_nan=False).encode


def _to_json(value: Any) -> str:
    """Valid JSON text: non-finite floats become "NaN"/"Infinity"/"-Infinity", lone surrogates
    U+FFFD. The cleaning pass runs only for values that need it (or hold non-BMP characters,
    whose \\ud83d-style escapes look alike in the fast path's output)."""
    try:
        text = _encode(value)
    except ValueError:  # a NaN or infinite float
        return _encode(_json_safe(value))
    return _encode(_json_safe(value)) if "\\ud" in text else text


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return _json_safe(str(value))


def normalize_id(value: Any, size: int, what: str = "id") -> str:
    """A trace (size 16) or span (size 8) id as lowercase hex of 2*size chars.

    Accepts raw bytes, hex (shorter legacy ids are left-padded with zeros), or base64
    (what protobuf's JSON mapping prints). All-zero ids are invalid, as in W3C trace context.
    """
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) != size:
            raise SpanFormatError(f"expected a {size}-byte {what}, got {len(raw)} bytes")
        result = raw.hex()
    elif isinstance(value, str):
        text = value.strip().lower()
        if 0 < len(text) <= 2 * size and _is_hex(text):
            result = text.rjust(2 * size, "0")
        else:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != size:
                raise SpanFormatError(f"expected a {2 * size}-hex-digit {what}, got {value!r}")
            result = raw.hex()
    else:
        raise SpanFormatError(f"expected a {what} string, got {type(value).__name__}")
    if result.strip("0") == "":
        raise SpanFormatError(f"expected a non-zero {what}, got {value!r}")
    return result


def optional_id(value: Any, size: int, what: str) -> str | None:
    """Like `normalize_id`, but empty or all-zero values mean "none" (a root span's parent)."""
    if value is None or value == "" or value == b"":
        return None
    try:
        return normalize_id(value, size, what)
    except SpanFormatError:
        if isinstance(value, bytes | bytearray) and not any(value):
            return None
        if isinstance(value, str) and value.strip("0") == "":
            return None
        raise


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _clip(value: str | None, limit: int) -> str | None:
    """Cut to the column size, as valid UTF-8 text (`clean_text`). A value that is not text
    (an OTLP/JSON body may give a number or a list where a string belongs) is stored as its
    text, not refused: one odd span must not cost the spans written with it."""
    if not value:
        return value
    if not isinstance(value, str):
        value = str(value)
    return clean_text(value[:limit])


def _clip_id(value: str | None, limit: int) -> str | None:
    """An identifier cut to the column as ingest cuts the event's (`cut_id`: its start and a
    hash of the whole), so a span still names the event, flow or service it belongs to."""
    if not value:
        return value
    return cut_id(clean_text(value), limit)


def check_time_us(value: int, what: str) -> int:
    """A span time in microseconds since the epoch, refused unless 0 <= value <= MAX_TIME_US
    (later times cannot be shown as dates: they would break every reader of the span)."""
    if not 0 <= value <= MAX_TIME_US:
        raise SpanFormatError(f"expected a {what} between 1970 and 9999 (microseconds "
                              f"0..{MAX_TIME_US}), got {value}")
    return value


_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def _bounded(value: int | None, limit: int) -> int | None:
    """None for integers the column cannot hold (they stay in the attributes JSON)."""
    return value if value is None or -limit - 1 <= value <= limit else None
