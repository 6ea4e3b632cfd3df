"""Turn a decoded `Event` into an `events` row (store/schema.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from choreoscope.instrumentation.event import Event

from .redact import Redactor

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def flow_id(event: Event, trace_id: str | None) -> str:
    """The flow an event belongs to: correlation id, else trace id, else event id, else
    `topic/partition/offset`."""
    return (
        event.correlation_id
        or trace_id
        or event.id
        or f"{event.topic}/{event.partition}/{event.offset}"
    )


def time_ms(value: str | None) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time, None when missing or unparseable."""
    if not value:
        return None
    # The common form `YYYY-MM-DDTHH:MM:SS.fffZ`: events of one second share the parsed
    # second, and the fraction is read as digits (no float rounding).
    if len(value) > 21 and value[19] == "." and value[-1] == "Z" and value[20:-1].isdigit():
        second = _seconds.get(value[:19])
        if second is None:
            second = _second_ms(value[:19])
            if len(_seconds) >= 4096:
                _seconds.clear()
            _seconds[value[:19]] = second
        if second is not None:
            return second + int(value[20:-1][:3].ljust(3, "0"))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)


_seconds: dict[str, int | None] = {}


def _second_ms(date_time: str) -> int | None:
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
    return bytes(key).decode("utf-8", "backslashreplace")


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
    """The `events` row of a decoded event; `headers` are the record's raw headers, or
    `text_headers` the same already decoded by the decoder, and `raw_value` its value
    (stored as it is when it is clean binary-mode JSON data)."""
    tp = event.traceparent  # validated by the decoder, None when absent or malformed
    trace_id = tp[3:35] if tp else None
    span_id = tp[36:52] if tp else None
    value = raw_value if event.envelope == "binary" else None
    data, truncated = redactor.data_json(event.data, value)
    row = {
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "event_id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "flow_id": flow_id(event, trace_id),
        "schema_version": event.schema_version,
        "time": event.time,
        "time_ms": time_ms(event.time),
        "sequence": event.sequence,
        "key": _key_text(event.key),
        "trace_id": trace_id,
        "span_id": span_id,
        "broker_ts_ms": event.timestamp_ms,
        "observed_at_ms": observed_at_ms,
        "envelope": event.envelope,
        "problems": _dumps(event.problems) if event.problems else None,
        "headers": (redactor.headers_json(headers) if text_headers is None
                    else redactor.text_headers_json(text_headers)),
        "data": data,
        "data_size": len(raw_value) if raw_value is not None else value_size,
        "data_truncated": truncated,
    }
    texts = [t for t in map(row.__getitem__, _LIMITED) if t]
    if texts and ("\x00" in "".join(texts) or max(map(len, texts)) > 128
                  or len(row["schema_version"] or "") > 32 or len(row["time"] or "") > 64):
        for name, limit in _LIMITS:
            text = row[name]
            if text is not None and (len(text) > limit or "\x00" in text):
                row[name] = _fit(name, text, limit, row)
    seq = row["sequence"]
    if seq is not None and not _MIN_BIGINT <= seq <= _MAX_BIGINT:
        row["sequence"] = None
        _add_problem(row, f"{BAD_SEQUENCE}: {seq} does not fit 64 bits")
    return row


# Text columns with a length limit (store/schema.py); longer values are cut, with a problem.
_LIMITS = (
    ("event_id", 128), ("type", 255), ("source", 255), ("subject", 255),
    ("correlation_id", 128), ("causation_id", 128), ("flow_id", 128),
    ("schema_version", 32), ("time", 64), ("topic", 255), ("key", 1 << 20),
)
_LIMITED = tuple(name for name, _limit in _LIMITS)  # every limit is >= 128 but these two:
assert {limit for _name, limit in _LIMITS if limit < 128} == {32, 64}
_MIN_BIGINT, _MAX_BIGINT = -(1 << 63), (1 << 63) - 1
FIELD_TOO_LONG = "field_too_long"
BAD_SEQUENCE = "bad_sequence"


def _fit(name: str, text: str, limit: int, row: dict[str, Any]) -> str:
    """A text value the store accepts: NUL characters replaced, cut to `limit` characters."""
    fitted = text.replace("\x00", "\ufffd")
    if len(fitted) > limit:
        _add_problem(row, f"{FIELD_TOO_LONG}: {name} has {len(text)} characters, kept {limit}")
        fitted = fitted[:limit]
    return fitted


def _add_problem(row: dict[str, Any], problem: str) -> None:
    problems = json.loads(row["problems"]) if row["problems"] else []
    problems.append(problem)
    row["problems"] = _dumps(problems)
