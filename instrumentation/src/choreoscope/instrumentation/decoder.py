"""Decode one Kafka record into an `Event`, whatever envelope it carries.

Shared by the consumer decorator and the collector. Understands, in this order:

1. CloudEvents structured mode (`content-type: application/cloudevents+json`, envelope in
   the value; also a value that is plainly a CloudEvents JSON object);
2. CloudEvents binary mode (`ce_*` headers, data in the value);
3. the common hand-written JSON envelope `{eventId, eventType, version, timestamp, source,
   correlationId?, causationId?, data}` (camelCase or snake_case);
4. anything else: an event of unknown type, with a `no_envelope` problem.

Never raises: every problem is recorded on `Event.problems` as `code` or `code: detail`, and
the record is always kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from . import wire
from .event import Event
from .naming import is_past_tense
from .traceparent import InvalidTraceparent, parse_traceparent

# Problem codes (the part before ": "), stable: the collector turns them into anomalies.
MISSING_ID = "missing_id"
MISSING_TYPE = "missing_type"
MISSING_SOURCE = "missing_source"
MISSING_TIME = "missing_time"
MISSING_SCHEMA_VERSION = "missing_schema_version"
BAD_SPECVERSION = "bad_specversion"
BAD_TIME = "bad_time"
BAD_SEQUENCE = "bad_sequence"
BAD_TRACEPARENT = "bad_traceparent"
BAD_TRACESTATE = "bad_tracestate"
BAD_HEADER = "bad_header"
DUPLICATE_HEADER = "duplicate_header"
TYPE_NOT_PAST_TENSE = "type_not_past_tense"
UNDECODABLE_VALUE = "undecodable_value"
BAD_FIELD = "bad_field"
NO_ENVELOPE = "no_envelope"

_JSON_TYPES = ("application/json", "text/json")
_MAX_TRACESTATE = 512

RecordHeaders = Iterable[tuple[Any, Any]] | None

# Hand-written envelope: our field -> accepted spellings.
_ENVELOPE_FIELDS = {
    "id": ("eventId", "event_id"),
    "type": ("eventType", "event_type"),
    "source": ("source",),
    "time": ("timestamp", "time", "occurredAt", "occurred_at"),
    "schema_version": ("version", "schemaVersion", "schema_version"),
    "correlation_id": ("correlationId", "correlation_id"),
    "causation_id": ("causationId", "causation_id"),
    "subject": ("subject", "aggregateId", "aggregate_id"),
    "sequence": ("sequence",),
}


def decode_record(
    headers: RecordHeaders,
    value: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
) -> Event:
    """Decode a record's headers and value into an `Event` (never raises)."""
    problems: list[str] = []
    try:
        hdrs = _read_headers(headers, problems)
        event = _decode(hdrs, value, problems)
    except Exception as exc:  # a decoder bug must not lose the record
        problems.append(f"{UNDECODABLE_VALUE}: {type(exc).__name__}: {exc}")
        event = Event(id=None, type=None, source=None, data=_raw(value), envelope="unknown")
        hdrs = {}
    event.topic = topic
    event.partition = partition
    event.offset = offset
    event.key = key
    event.timestamp_ms = timestamp_ms
    event.problems = problems
    _check_trace_context(event, hdrs, problems)
    if event.type and not is_past_tense(event.type):
        problems.append(f"{TYPE_NOT_PAST_TENSE}: {event.type}")
    return event


def _read_headers(headers: RecordHeaders, problems: list[str]) -> dict[str, str]:
    """Header names lower-cased, values decoded as UTF-8; the first of duplicates wins."""
    out: dict[str, str] = {}
    if not headers:
        return out
    for name, raw in headers:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        elif not isinstance(name, str):
            problems.append(f"{BAD_HEADER}: header name of type {type(name).__name__}")
            continue
        name = name.lower()
        if raw is None:
            continue
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{BAD_HEADER}: {name} is not valid UTF-8")
                text = bytes(raw).decode("utf-8", "replace")
            except TypeError:
                problems.append(f"{BAD_HEADER}: {name} has a value of type {type(raw).__name__}")
                continue
        if name in out:
            if out[name] != text:
                problems.append(f"{DUPLICATE_HEADER}: {name}")
            continue
        out[name] = text
    return out


def _decode(hdrs: dict[str, str], value: bytes | None, problems: list[str]) -> Event:
    content_type = hdrs.get(wire.CONTENT_TYPE)
    if content_type and content_type.startswith("application/cloudevents"):
        return _structured(_parse_json(value, problems), problems)
    if wire.ID in hdrs or wire.TYPE in hdrs or wire.SPECVERSION in hdrs:
        return _binary(hdrs, value, content_type, problems)
    parsed = _try_json(value)
    if isinstance(parsed, dict):
        if "specversion" in parsed and ("id" in parsed or "type" in parsed):
            return _structured(parsed, problems)
        if any(k in parsed for k in ("eventId", "event_id", "eventType", "event_type")):
            return _hand_written(parsed, problems)
    problems.append(f"{NO_ENVELOPE}: no ce_* headers and no JSON envelope in the value")
    if parsed is _NOT_JSON:
        if value is not None:
            problems.append(f"{UNDECODABLE_VALUE}: not JSON")
        data: Any = _raw(value)
    else:
        data = parsed
    return Event(id=None, type=None, source=None, data=data, envelope="unknown")


def _binary(
    hdrs: dict[str, str], value: bytes | None, content_type: str | None, problems: list[str]
) -> Event:
    get = hdrs.get
    spec = get(wire.SPECVERSION)
    if spec != "1.0":
        problems.append(f"{BAD_SPECVERSION}: {spec!r}" if spec else f"{BAD_SPECVERSION}: missing")
    if value is None:
        data: Any = None
    elif content_type is None or _is_json_type(content_type):
        data = _try_json(value)
        if data is _NOT_JSON:
            problems.append(f"{UNDECODABLE_VALUE}: not JSON")
            data = _raw(value)
    else:
        data = _raw(value)
    event = Event(
        id=get(wire.ID) or None,
        type=get(wire.TYPE) or None,
        source=get(wire.SOURCE) or None,
        subject=get(wire.SUBJECT) or None,
        correlation_id=get(wire.CORRELATIONID) or None,
        causation_id=get(wire.CAUSATIONID) or None,
        schema_version=get(wire.SCHEMAVERSION) or None,
        time=get(wire.TIME) or None,
        data=data,
        envelope="binary",
    )
    event.sequence = _sequence(get(wire.SEQUENCE), problems)
    _check_required(event, problems)
    return event


def _structured(obj: Any, problems: list[str]) -> Event:
    if not isinstance(obj, dict):
        if obj is not _NOT_JSON:
            problems.append(f"{UNDECODABLE_VALUE}: structured envelope is not a JSON object")
        return Event(id=None, type=None, source=None, data=None, envelope="structured")
    spec = obj.get("specversion")
    if spec != "1.0":
        problems.append(f"{BAD_SPECVERSION}: {spec!r}")
    data = obj.get("data")
    if data is None and "data_base64" in obj:
        data = obj["data_base64"]
    event = Event(
        id=_text(obj, "id", problems),
        type=_text(obj, "type", problems),
        source=_text(obj, "source", problems),
        subject=_text(obj, "subject", problems),
        correlation_id=_text(obj, "correlationid", problems),
        causation_id=_text(obj, "causationid", problems),
        schema_version=_text(obj, "schemaversion", problems),
        time=_text(obj, "time", problems),
        data=data,
        envelope="structured",
    )
    event.sequence = _sequence(obj.get("sequence"), problems)
    tp = obj.get("traceparent")
    if isinstance(tp, str):
        event.traceparent = tp  # validated with the header one in _check_trace_context
    _check_required(event, problems)
    return event


def _hand_written(obj: dict[str, Any], problems: list[str]) -> Event:
    fields: dict[str, Any] = {}
    for ours, spellings in _ENVELOPE_FIELDS.items():
        for spelling in spellings:
            if spelling in obj:
                fields[ours] = obj[spelling]
                break
    time = fields.get("time")
    if isinstance(time, int | float) and not isinstance(time, bool):
        fields["time"] = _epoch_to_rfc3339(time)
    texts = {
        name: _as_text(name, fields.get(name), problems)
        for name in ("id", "type", "source", "time", "schema_version", "correlation_id",
                     "causation_id", "subject")
    }
    event = Event(**texts, data=obj.get("data", obj.get("payload")), envelope="json_envelope")
    event.sequence = _sequence(fields.get("sequence"), problems)
    _check_required(event, problems)
    return event


def _check_required(event: Event, problems: list[str]) -> None:
    if not event.id:
        problems.append(MISSING_ID)
    if not event.type:
        problems.append(MISSING_TYPE)
    if not event.source:
        problems.append(MISSING_SOURCE)
    if not event.time:
        problems.append(MISSING_TIME)
    elif not _valid_time(event.time):
        problems.append(f"{BAD_TIME}: {event.time!r} is not RFC 3339")
    if not event.schema_version:
        problems.append(MISSING_SCHEMA_VERSION)


def _check_trace_context(event: Event, hdrs: dict[str, str], problems: list[str]) -> None:
    tp = hdrs.get(wire.TRACEPARENT) or event.traceparent
    event.traceparent = None
    if tp is not None:
        try:
            parse_traceparent(tp)
        except InvalidTraceparent as exc:
            problems.append(f"{BAD_TRACEPARENT}: {exc}")
        else:
            event.traceparent = tp
    ts = hdrs.get(wire.TRACESTATE)
    if ts is not None:
        if len(ts) > _MAX_TRACESTATE or any(ord(c) < 0x20 or ord(c) > 0x7E for c in ts):
            problems.append(f"{BAD_TRACESTATE}: not printable ASCII of at most {_MAX_TRACESTATE} chars")
        elif event.traceparent is not None:
            event.tracestate = ts


_NOT_JSON: Any = object()


def _try_json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return _NOT_JSON


def _parse_json(value: bytes | None, problems: list[str]) -> Any:
    parsed = _try_json(value)
    if parsed is _NOT_JSON or parsed is None:
        problems.append(f"{UNDECODABLE_VALUE}: structured envelope is not JSON")
        return _NOT_JSON
    return parsed


def _raw(value: bytes | None) -> Any:
    """Non-JSON data: text when it is UTF-8, else the bytes."""
    if value is None:
        return None
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(value)


def _is_json_type(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct in _JSON_TYPES or ct.endswith("+json")


def _text(obj: dict[str, Any], name: str, problems: list[str]) -> str | None:
    return _as_text(name, obj.get(name), problems)


def _as_text(name: str, value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    problems.append(f"{BAD_FIELD}: {name} is a {type(value).__name__}, expected a string")
    return None


def _sequence(raw: Any, problems: list[str]) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    problems.append(f"{BAD_SEQUENCE}: {raw!r} is not an integer")
    return None


def _valid_time(value: str) -> bool:
    # RFC 3339 requires a date, a time and an offset (or Z).
    if len(value) < 20 or value[10] not in "Tt ":
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _epoch_to_rfc3339(value: float) -> str:
    seconds = value / 1000 if value > 1e11 else value  # milliseconds or seconds
    try:
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(value)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
