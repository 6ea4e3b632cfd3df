"""Turn a decoded `Event` into an `events` row (store/schema.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from operator import itemgetter
from typing import Any

from choreoscope.instrumentation import wire
from choreoscope.instrumentation._clock import epoch_us
from choreoscope.instrumentation.event import Event, flow_of

from ..store.text import ID_SUFFIX_CHARS, cut_id
from .redact import Redactor

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def flow_id(event: Event) -> str:
    """The flow an event belongs to: the instrumentation's `flow_of` (correlation id, else
    trace id, else event id, else `topic/partition/offset`), so what it gives an effect as
    correlation id is its cause's flow here."""
    return flow_of(event) or f"{event.topic}/{event.partition}/{event.offset}"


def time_ms(value: str | None) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time, None when missing or unparseable."""
    if not value:
        return None
    # The common form `YYYY-MM-DDTHH:MM:SS.fffZ`: events of one second share the parsed
    # second, and the fraction is read as digits (no float rounding).
    if (len(value) > 21 and value[19] == "." and value[-1] == "Z"
            and value[20:-1].isascii() and value[20:-1].isdigit()):
        second = _seconds.get(value[:19])
        if second is None:
            second = _second_ms(value[:19])
            if len(_seconds) >= 4096:
                _seconds.clear()
            _seconds[value[:19]] = second
        if second is not None:
            return second + int(value[20:-1][:3].ljust(3, "0"))
    us = epoch_us(value)
    return None if us is None else us // 1000


_seconds: dict[str, int | None] = {}


def _second_ms(date_time: str) -> int | None:
    if not date_time.isascii():  # datetime reads other scripts' digits
        return None
    try:
        parsed = datetime.fromisoformat(date_time + "+00:00")
    except ValueError:
        return None
    return int(parsed.timestamp()) * 1000


def _key_text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, str):
        return key
    return wire.key_text(bytes(key))  # printable text, else hex: as the subject it gives


# The last hex digit of a traceparent's flags when its sampled bit (0x01) is set.
_SAMPLED = frozenset("13579bdf")

# The columns of an `events` row, in the order `event_values` gives them.
COLUMNS = (
    "topic", "partition", "offset", "event_id", "type", "source", "subject", "correlation_id",
    "causation_id", "flow_id", "schema_version", "time", "time_ms", "sequence", "key",
    "trace_id", "span_id", "broker_ts_ms", "observed_at_ms", "envelope", "problems", "headers",
    "data", "data_size", "data_truncated", "trace_sampled",
)


def event_row(
    event: Event,
    *,
    redactor: Redactor,
    observed_at_ms: int,
    headers: Iterable[tuple[Any, Any]] | None = None,
    value_size: int | None = None,
    raw_value: bytes | None = None,
    text_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The `events` row of a decoded event, as a dict (see `event_values`)."""
    return dict(zip(COLUMNS, event_values(
        event, redactor, observed_at_ms, headers, value_size, raw_value, text_headers),
        strict=True))


def event_values(
    event: Event,
    redactor: Redactor,
    observed_at_ms: int,
    headers: Iterable[tuple[Any, Any]] | None = None,
    value_size: int | None = None,
    raw_value: bytes | None = None,
    text_headers: dict[str, str] | None = None,
) -> tuple[Any, ...]:
    """The `events` row of a decoded event, values in `COLUMNS` order; `headers` are the
    record's raw headers, or `text_headers` the same already decoded by the decoder, and
    `raw_value` its value (stored as it is when it is clean binary-mode JSON data)."""
    tp = event.traceparent  # validated by the decoder, None when absent or malformed
    trace_id = tp[3:35] if tp else None
    data, truncated = redactor.data_json(
        event.data, raw_value if event.envelope == "binary" else None)
    headers_text, headers_problem = redactor.fit_headers(
        redactor.headers_json(headers) if text_headers is None
        else redactor.text_headers_json(text_headers))
    row = (
        event.topic, event.partition, event.offset, event.id, event.type, event.source,
        event.subject, event.correlation_id, event.causation_id, flow_id(event),
        event.schema_version, event.time, time_ms(event.time), event.sequence,
        _key_text(event.key), trace_id, tp[36:52] if tp else None, event.timestamp_ms,
        observed_at_ms, event.envelope, _dumps(event.problems) if event.problems else None,
        headers_text, data, len(raw_value) if raw_value is not None else value_size, truncated,
        tp[54] in _SAMPLED if tp else None,
    )
    texts = [t for t in _limited(row) if t]
    seq = event.sequence
    if (texts and ("\x00" in "".join(texts) or max(map(len, texts)) > 128
                   or len(event.schema_version or "") > 32 or len(event.time or "") > 64)) or (
            seq is not None and not _MIN_BIGINT <= seq <= _MAX_BIGINT) or headers_problem:
        fitting = dict(zip(COLUMNS, row, strict=True))
        if headers_problem:
            _add_problem(fitting, headers_problem)
        return _fitted(fitting)
    return row


def _fitted(row: dict[str, Any]) -> tuple[Any, ...]:
    """The row with over-long or NUL-laden texts and a sequence beyond 64 bits made to fit
    the store, each change recorded as a problem."""
    for name, limit in _LIMITS:
        text = row[name]
        if text is not None and (len(text) > limit or "\x00" in text):
            row[name] = _fit(name, text, limit, row)
    seq = row["sequence"]
    if seq is not None and not _MIN_BIGINT <= seq <= _MAX_BIGINT:
        row["sequence"] = None
        _add_problem(row, f"{BAD_SEQUENCE}: {seq} does not fit 64 bits")
    return tuple(row[name] for name in COLUMNS)


# Text columns with a length limit (store/schema.py); longer values are cut, with a problem.
# Identifiers keep a hash of the whole (`cut_id`): cut plainly, ids sharing a start were one.
_LIMITS = (
    ("event_id", 128), ("type", 255), ("source", 255), ("subject", 255),
    ("correlation_id", 128), ("causation_id", 128), ("flow_id", 128),
    ("schema_version", 32), ("time", 64), ("topic", 255), ("key", 1 << 20),
)
# every limit is >= 128 but these two:
assert {limit for _name, limit in _LIMITS if limit < 128} == {32, 64}
_limited = itemgetter(*(COLUMNS.index(name) for name, _limit in _LIMITS))
_IDS = frozenset(("event_id", "type", "source", "subject", "correlation_id", "causation_id",
                  "flow_id", "topic"))
_MIN_BIGINT, _MAX_BIGINT = -(1 << 63), (1 << 63) - 1
FIELD_TOO_LONG = "field_too_long"
BAD_SEQUENCE = "bad_sequence"


def _fit(name: str, text: str, limit: int, row: dict[str, Any]) -> str:
    """A text value the store accepts: NUL characters replaced, cut to `limit` characters
    (an identifier keeping a hash of the whole)."""
    fitted = text.replace("\x00", "\ufffd")
    if len(fitted) > limit:
        if name in _IDS:
            fitted = cut_id(fitted, limit)
            kept = f"kept its first {limit - ID_SUFFIX_CHARS} and a hash of the whole"
        else:
            fitted = fitted[:limit]
            kept = f"kept {limit}"
        _add_problem(row, f"{FIELD_TOO_LONG}: {name} has {len(text)} characters, {kept}")
    return fitted


def _add_problem(row: dict[str, Any], problem: str) -> None:
    problems = json.loads(row["problems"]) if row["problems"] else []
    problems.append(problem)
    row["problems"] = _dumps(problems)
