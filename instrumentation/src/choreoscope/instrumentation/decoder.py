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

import base64
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from . import wire
from .event import Event
from .naming import is_past_tense
from .traceparent import InvalidTraceparent, parse_traceparent
from .tracestate import tracestate_problem

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

RecordHeaders = Iterable[tuple[Any, Any]] | Mapping[Any, Any] | None

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

# Every key of the hand-written envelope, and those that name the event.
_ENVELOPE_KEYS = frozenset(
    {s for spellings in _ENVELOPE_FIELDS.values() for s in spellings} | {"data", "payload"})
_NAMING_KEYS = (*_ENVELOPE_FIELDS["id"], *_ENVELOPE_FIELDS["type"])


def _is_hand_written(obj: dict[str, Any]) -> bool:
    """Whether a JSON object is the hand-written envelope: a key naming the event (its id or
    type) beside at least one more envelope key. One such key alone is a payload field
    (`{"event_type": "click", "user": 7}`), not an envelope."""
    if not any(k in obj for k in _NAMING_KEYS):
        return False
    found = 0
    for k in obj:
        if k in _ENVELOPE_KEYS:
            found += 1
            if found == 2:
                return True
    return False


def decode_record(
    headers: RecordHeaders,
    value: Any,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
) -> Event:
    """Decode a record's headers and value into an `Event` (never raises).

    `headers` as kafka-python and confluent-kafka give them (a list of `(name, bytes)`
    pairs, or None) or as a mapping; `value` is normally bytes, but a value some
    deserializer already turned into text or JSON objects is read as well.
    """
    return decode_with_headers(headers, value, topic=topic, partition=partition, offset=offset,
                               key=key, timestamp_ms=timestamp_ms)[0]


def decode_with_headers(
    headers: RecordHeaders,
    value: Any,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
) -> tuple[Event, dict[str, str] | None]:
    """`decode_record`, and the record's headers as text when they were all well-formed
    (distinct lower-case names, UTF-8 values, as the decoder found them); None otherwise.

    The collector stores the headers too: this spares it decoding them a second time."""
    if type(headers) is list:
        try:
            hdrs = {name: raw.decode() for name, raw in headers}
            if len(hdrs) == len(headers):
                event = _fast_binary(hdrs, value, topic, partition, offset, key, timestamp_ms)
                if event is not None:
                    return event, hdrs
        except Exception:  # noqa: BLE001  # anything unusual: the careful path decides
            pass
    problems: list[str] = []
    try:
        hdrs = _read_headers(headers, problems)
        if wire.ID in hdrs and wire.CONTENT_TYPE not in hdrs:  # the common case: binary, JSON
            event = _binary(hdrs, value, None, problems)
        else:
            event = _decode(hdrs, value, problems)
        _check_trace_context(event, hdrs, problems)
        if event.type and not is_past_tense(event.type) and event.type != topic:
            problems.append(f"{TYPE_NOT_PAST_TENSE}: {event.type}")
    except Exception as exc:  # noqa: BLE001  # a decoder bug must not lose the record
        problems.append(f"{UNDECODABLE_VALUE}: {type(exc).__name__}: {exc}")
        event = Event(id=None, type=None, source=None, data=_raw(value), envelope="unknown")
    event.topic = topic
    event.partition = partition
    event.offset = offset
    event.key = key
    event.timestamp_ms = timestamp_ms
    event.problems = problems
    return event, None


# Header names the decoder reads; the fast path below needs every name to be lower case.
_KNOWN_HEADERS = frozenset(
    (
        wire.SPECVERSION,
        wire.ID,
        wire.TYPE,
        wire.SOURCE,
        wire.TIME,
        wire.SUBJECT,
        wire.SCHEMAVERSION,
        wire.CORRELATIONID,
        wire.CAUSATIONID,
        wire.SEQUENCE,
        wire.CONTENT_TYPE,
        wire.TRACEPARENT,
        wire.TRACESTATE,
    )
)


def _fast_binary(
    hdrs: dict[str, str],
    value: Any,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    timestamp_ms: int | None,
) -> Event | None:
    """The well-formed binary-mode record, decoded in one go; None for anything else.

    The collector decodes the whole bus, so the common case gets this straight path. It
    accepts only records on which the careful path would find no problem (but a type not in
    the past tense), and gives the same `Event`; whatever it is not sure of, it leaves to the
    careful path (tested to agree).
    """
    if not _KNOWN_HEADERS.issuperset(hdrs):
        return None
    get = hdrs.get
    if get(wire.SPECVERSION) != "1.0" or wire.CONTENT_TYPE in hdrs:
        return None
    id_, type_, source = get(wire.ID), get(wire.TYPE), get(wire.SOURCE)
    time, schema_version = get(wire.TIME), get(wire.SCHEMAVERSION)
    if not (id_ and type_ and source and time and schema_version):
        return None
    # RFC 3339 as producers mostly write it (`...T05:35:14.123456Z`), else the full check.
    if not (
        len(time) > 21
        and time[19] == "."
        and time[-1] == "Z"
        and time[20:-1].isdigit()
        and time.isascii()
        and _valid_stamps.get(time[:19] + "Z")
    ) and not valid_time(time):
        return None
    seq = get(wire.SEQUENCE)
    sequence = wire.decimal_int(seq) if seq else None  # ValueError: the careful path says why
    tp = get(wire.TRACEPARENT)
    if tp:
        if _WELL_FORMED_V00(tp) is None or tp[3:35] == _ZERO_TRACE or tp[36:52] == _ZERO_SPAN:
            return None
        ts = get(wire.TRACESTATE)
        if ts is not None and tracestate_problem(ts) is not None:
            return None
        tracestate = ts
    elif wire.TRACESTATE in hdrs:
        return None
    else:
        tp = tracestate = None
    # Every other check passed: a type that is not past tense is the one possible problem
    # (not the topic's name: that is the type of a plain `send`, which nobody chose).
    problems = ([] if is_past_tense(type_) or type_ == topic
                else [f"{TYPE_NOT_PAST_TENSE}: {type_}"])
    data = None if value is None else _fast_json(value)
    return Event(
        id_,
        type_,
        source,
        get(wire.SUBJECT) or None,
        get(wire.CORRELATIONID) or None,
        get(wire.CAUSATIONID) or None,
        schema_version,
        time,
        sequence,
        data,
        topic,
        partition,
        offset,
        key,
        tp,
        tracestate,
        timestamp_ms,
        "binary",
        problems,
    )


def _read_headers(headers: RecordHeaders, problems: list[str]) -> dict[str, str]:
    """Header names lower-cased, values decoded as UTF-8; the first of duplicates wins."""
    if not headers:
        return {}
    if type(headers) is not list:
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        elif not isinstance(headers, tuple):
            headers = list(headers)
    # Fast path, the common case: str names already in lower case, UTF-8 bytes values,
    # no duplicates. Anything else takes the careful path below.
    try:
        out = {name: raw.decode() for name, raw in headers}
    except Exception:  # noqa: BLE001  # None or str values, bad UTF-8, malformed pairs
        return _read_headers_carefully(headers, problems)
    if len(out) == len(headers) and (
        _KNOWN_HEADERS.issuperset(out)
        or all(isinstance(n, str) and n == n.lower() for n in out if n not in _KNOWN_HEADERS)
    ):
        return out
    return _read_headers_carefully(headers, problems)


def _read_headers_carefully(headers: Iterable[Any], problems: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in headers:
        try:
            name, raw = pair
        except (TypeError, ValueError):
            problems.append(f"{BAD_HEADER}: expected a (name, value) pair, got {pair!r:.60}")
            continue
        if isinstance(name, bytes | bytearray):
            try:
                name = bytes(name).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{BAD_HEADER}: header name {bytes(name)!r:.60} is not valid UTF-8")
                name = bytes(name).decode("utf-8", "backslashreplace")
        elif not isinstance(name, str):
            problems.append(f"{BAD_HEADER}: header name of type {type(name).__name__}")
            continue
        name = name.lower()
        if raw is None:
            continue
        if isinstance(raw, str):
            text = raw
        elif isinstance(raw, bytes | bytearray | memoryview):
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(raw).decode("utf-8", "backslashreplace")
                if name in _KNOWN_HEADERS or name.startswith("ce_"):
                    problems.append(f"{BAD_HEADER}: {name} is not valid UTF-8")
        else:
            problems.append(f"{BAD_HEADER}: {name} has a value of type {type(raw).__name__}")
            continue
        if name in out:
            if out[name] != text:
                problems.append(f"{DUPLICATE_HEADER}: {name}")
            continue
        out[name] = text
    return out


def _decode(hdrs: dict[str, str], value: Any, problems: list[str]) -> Event:
    content_type = hdrs.get(wire.CONTENT_TYPE)
    if wire.ID in hdrs or wire.TYPE in hdrs or wire.SPECVERSION in hdrs:
        if content_type is None:
            return _binary(hdrs, value, None, problems)
        if not content_type.lower().startswith("application/cloudevents"):
            return _binary(hdrs, value, content_type, problems)
    if content_type and content_type.lower().startswith("application/cloudevents"):
        return _structured(_parse_json(value, problems), problems, value)
    parsed = _try_json(value)
    if isinstance(parsed, dict):
        if "specversion" in parsed and ("id" in parsed or "type" in parsed):
            return _structured(parsed, problems)
        if _is_hand_written(parsed):
            return _hand_written(parsed, problems)
    problems.append(f"{NO_ENVELOPE}: no ce_* headers and no JSON envelope in the value")
    if isinstance(parsed, _NotJson):
        if value is not None:
            problems.append(f"{UNDECODABLE_VALUE}: {parsed.reason}")
        data: Any = _raw(value)
    else:
        data = parsed
    return Event(id=None, type=None, source=None, data=data, envelope="unknown")


def _binary(
    hdrs: dict[str, str], value: Any, content_type: str | None, problems: list[str]
) -> Event:
    get = hdrs.get
    if get(wire.SPECVERSION) != "1.0":
        spec = get(wire.SPECVERSION)
        problems.append(f"{BAD_SPECVERSION}: {spec!r}" if spec else f"{BAD_SPECVERSION}: missing")
    if value is None:
        data: Any = None
    elif content_type is None or _is_json_type(content_type):
        try:
            data = _fast_json(value)  # the common case: UTF-8 JSON bytes
        except Exception:  # noqa: BLE001  # not bytes, not UTF-8, not JSON: the careful way
            data = _try_json(value)
        if isinstance(data, _NotJson):
            problems.append(f"{UNDECODABLE_VALUE}: {data.reason}")
            data = _raw(value)
    else:
        data = _raw(value)
    # Positional, in Event's field order (cheaper than keywords on this hot path); an empty
    # header value counts as absent.
    event = Event(
        get(wire.ID) or None,
        get(wire.TYPE) or None,
        get(wire.SOURCE) or None,
        get(wire.SUBJECT) or None,
        get(wire.CORRELATIONID) or None,
        get(wire.CAUSATIONID) or None,
        get(wire.SCHEMAVERSION) or None,
        get(wire.TIME) or None,
        None,
        data,
    )
    seq = get(wire.SEQUENCE)
    if seq:
        event.sequence = _sequence(seq, problems)
    _check_required(event, problems)
    return event


def _structured(obj: Any, problems: list[str], value: Any = None) -> Event:
    """The event of a structured-mode envelope. A value that is no envelope (JSON but not an
    object, or not JSON) is kept as the event's data, with the problem recorded."""
    if not isinstance(obj, dict):
        unread = isinstance(obj, _NotJson)
        if not unread:
            problems.append(f"{UNDECODABLE_VALUE}: structured envelope is not a JSON object")
        data = (None if value is None else _raw(value)) if unread else obj
        return Event(id=None, type=None, source=None, data=data, envelope="structured")
    spec = obj.get("specversion")
    if spec != "1.0":
        problems.append(f"{BAD_SPECVERSION}: {spec!r}")
    data = obj.get("data")
    if data is None and "data_base64" in obj:
        data = _base64(obj["data_base64"], problems)
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
    def field(ours: str) -> Any:
        for spelling in _ENVELOPE_FIELDS[ours]:
            if spelling in obj:
                return obj[spelling]
        return None

    def text(ours: str, value: Any = None) -> str | None:
        return _as_text(ours, field(ours) if value is None else value, problems)

    time = field("time")
    if isinstance(time, int | float) and not isinstance(time, bool):
        time = _epoch_to_rfc3339(time)
    # Keyword arguments are evaluated in order: problems come out id, type, source, time, ...
    event = Event(
        id=text("id"),
        type=text("type"),
        source=text("source"),
        time=text("time", time),
        schema_version=text("schema_version"),
        correlation_id=text("correlation_id"),
        causation_id=text("causation_id"),
        subject=text("subject"),
        data=obj.get("data", obj.get("payload")),
        envelope="json_envelope",
    )
    event.sequence = _sequence(field("sequence"), problems)
    _check_required(event, problems)
    return event


def _check_required(event: Event, problems: list[str]) -> None:
    if event.id and event.type and event.source and event.schema_version and event.time:
        if not valid_time(event.time):
            problems.append(f"{BAD_TIME}: {event.time!r} is not RFC 3339")
        return
    if not event.id:
        problems.append(MISSING_ID)
    if not event.type:
        problems.append(MISSING_TYPE)
    if not event.source:
        problems.append(MISSING_SOURCE)
    if not event.time:
        problems.append(MISSING_TIME)
    elif not valid_time(event.time):
        problems.append(f"{BAD_TIME}: {event.time!r} is not RFC 3339")
    if not event.schema_version:
        problems.append(MISSING_SCHEMA_VERSION)


def _check_trace_context(event: Event, hdrs: dict[str, str], problems: list[str]) -> None:
    tp = hdrs.get(wire.TRACEPARENT) or event.traceparent
    event.traceparent = None
    if tp is not None:
        if _WELL_FORMED_V00(tp) is not None and tp[3:35] != _ZERO_TRACE and tp[36:52] != _ZERO_SPAN:
            event.traceparent = tp  # the common case, checked without building a TraceParent
        else:
            try:
                parse_traceparent(tp)
            except InvalidTraceparent as exc:
                problems.append(f"{BAD_TRACEPARENT}: {exc}")
            else:
                event.traceparent = tp
    ts = hdrs.get(wire.TRACESTATE)
    if ts is not None:
        problem = tracestate_problem(ts)
        if problem is not None:
            problems.append(f"{BAD_TRACESTATE}: {problem}")
        elif event.traceparent is not None:
            event.tracestate = ts


class _NotJson:
    """What `_try_json` gives for a value it cannot read, and why (for the problem)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_NOT_JSON: Any = _NotJson("not JSON")
# Valid JSON nested deeper than the parser's recursion limit: not "not JSON".
_TOO_DEEP: Any = _NotJson("JSON nested too deeply to read")


# NaN and Infinity are not JSON (RFC 8259; orjson, PostgreSQL's jsonb and browsers refuse
# them) although Python's json reads them: a value holding one is undecodable, kept as text.
_json_decode = json.JSONDecoder(parse_constant=wire.refuse_constant).decode


def _stdlib_fast_json(value: bytes) -> Any:
    return _json_decode(value.decode())


# orjson (an optional dependency: `choreoscope-instrumentation[fast]`, and always with the
# collector) parses small values several times faster. Whatever it rejects (integers
# beyond 64 bits, lone surrogates, a BOM, ...) goes on to the standard library's json, so
# the decoded data is the same with or without it.
# orjson turns integers beyond 64 bits into floats, so a value with a run of 20 digits
# (rare: long numeric strings, huge integers) is left to the standard library as well.
try:
    from orjson import loads as _orjson_loads
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    if exc.name != "orjson":
        raise
    _fast_json = _stdlib_fast_json
else:
    # Every digit maps to "0", everything else to "x": a run of 20 digits is then a plain
    # substring search (several times cheaper than a regular expression).
    _DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
    _TWENTY_DIGITS = b"0" * 20

    def _fast_json(value: bytes) -> Any:
        if _TWENTY_DIGITS not in value.translate(_DIGITS_AS_ZERO):
            return _orjson_loads(value)
        return _stdlib_fast_json(value)


_WELL_FORMED_V00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").fullmatch
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _try_json(value: Any) -> Any:
    """The parsed JSON of `value`, or a `_NotJson` saying why not.

    Bytes are parsed as `json.loads` would (UTF-8 fast, then UTF-16/32 and a BOM); text
    likewise; anything else is taken as already deserialized by the consumer.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return _fast_json(value)
        except Exception:  # noqa: BLE001  # maybe UTF-16/32 or a BOM: json.loads decides
            pass
    elif not isinstance(value, str | bytearray | memoryview):
        return value
    try:
        return json.loads(bytes(value) if isinstance(value, memoryview) else value,
                          parse_constant=wire.refuse_constant)
    except (ValueError, TypeError):
        return _NOT_JSON
    except RecursionError:
        return _TOO_DEEP


def _parse_json(value: bytes | None, problems: list[str]) -> Any:
    if value is None:
        problems.append(f"{UNDECODABLE_VALUE}: structured envelope has no value")
        return _NOT_JSON
    parsed = _try_json(value)
    if isinstance(parsed, _NotJson):
        problems.append(f"{UNDECODABLE_VALUE}: structured envelope is "
                        + ("not JSON" if parsed is _NOT_JSON else "JSON nested too deeply "
                           "to read"))
    return parsed


def _raw(value: Any) -> Any:
    """Non-JSON data: text when it is UTF-8, else the bytes."""
    if not isinstance(value, bytes | bytearray | memoryview):
        return value  # None, text, or already deserialized into something else
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _base64(text: Any, problems: list[str]) -> Any:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        problems.append(f"{BAD_FIELD}: data_base64 is not base64")
        return text


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
            return wire.decimal_int(raw)
        except ValueError:
            pass
    # A container is named, not quoted: it may carry payload fields (a JSON envelope's
    # sequence holding an object), and problems are shown wherever anomalies are.
    shown = repr(raw) if isinstance(raw, str | int | float) else f"a {type(raw).__name__}"
    problems.append(f"{BAD_SEQUENCE}: {shown} is not an integer")
    return None


def valid_time(value: str) -> bool:
    """Whether `value` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)`.

    `T`/`Z` in either case (RFC 3339 5.6, and a space for `T` as its note allows), a leap
    second `:60`; not the other ISO 8601 forms `datetime.fromisoformat` also accepts
    (basic format, week dates, `+HHMM`, missing seconds).
    """
    n = len(value)
    if (
        n < 20
        or value[4] != "-"
        or value[7] != "-"
        or value[10] not in "Tt "
        or value[13] != ":"
        or value[16] != ":"
        or not value.isascii()
    ):
        return False
    end = value[19:]
    if end[0] == ".":
        digits = len(end) - len(end[1:].lstrip("0123456789")) - 1
        if digits == 0:
            return False
        end = end[1 + digits :]
    if end not in ("Z", "z") and (len(end) != 6 or end[0] not in "+-" or end[3] != ":"):
        return False
    # Events of one second share the date and time: remember which of those were valid.
    stamp = value[:19] + end
    known = _valid_stamps.get(stamp)
    if known is None:
        known = _valid_stamp(value[:10] + "T" + value[11:19], end)
        if len(_valid_stamps) >= 4096:
            _valid_stamps.clear()
        _valid_stamps[stamp] = known
    return known


_valid_stamps: dict[str, bool] = {}


def _valid_stamp(date_time: str, offset: str) -> bool:
    if date_time.endswith("60"):
        date_time = date_time[:17] + "59"  # a leap second: the rest must still be valid
    try:
        datetime.fromisoformat(date_time + ("+00:00" if offset in ("Z", "z") else offset))
    except ValueError:
        return False
    return True


def _epoch_to_rfc3339(value: float) -> str:
    seconds = value / 1000 if value > 1e11 else value  # milliseconds or seconds
    try:
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(value)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
