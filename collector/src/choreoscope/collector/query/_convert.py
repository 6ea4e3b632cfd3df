"""Small conversions shared by the query modules: stored ints and JSON text to JSON-able values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any


def rfc3339_ms(ms: int | None) -> str | None:
    """`1764135314123` -> `"2025-11-26T05:35:14.123Z"` (UTC, milliseconds, `Z`); None stays None,
    and so does a time no date can show (before year 1 or after 9999): never raises."""
    if ms is None:
        return None
    seconds, millis = divmod(int(ms), 1000)
    stamp = _utc(seconds)
    return None if stamp is None else f"{stamp}.{millis:03d}Z"


def rfc3339_us(us: int | None) -> str | None:
    """Microseconds since the epoch as RFC 3339 UTC with microseconds and `Z`; None for None
    and for times out of the range of dates (as `rfc3339_ms`)."""
    if us is None:
        return None
    seconds, micros = divmod(int(us), 1_000_000)
    stamp = _utc(seconds)
    return None if stamp is None else f"{stamp}.{micros:06d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(seconds: int) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS` of seconds since the epoch; None outside years 1..9999."""
    try:
        at = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None
    return f"{at.year:04d}-{at:%m-%dT%H:%M:%S}"


def json_or(text: str | None, default: Any) -> Any:
    """Parse a JSON column; None or unparseable text gives `default` (never raises)."""
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def json_list(text: str | None) -> list[Any]:
    value = json_or(text, [])
    return value if isinstance(value, list) else [value]


def has_nul(*values: object) -> bool:
    """Whether a filter value holds a NUL character, which no stored text can match (PostgreSQL
    refuses it outright, SQLite's LIKE would stop at it): such a filter matches nothing."""
    return any(isinstance(v, str) and "\x00" in v for v in values)
