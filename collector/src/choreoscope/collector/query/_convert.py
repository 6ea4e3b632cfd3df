"""Small conversions shared by the query modules: stored ints and JSON text to JSON-able values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def rfc3339_ms(ms: int | None) -> str | None:
    """`1764135314123` -> `"2025-11-26T05:35:14.123Z"` (UTC, milliseconds, `Z`); None stays None."""
    if ms is None:
        return None
    seconds, millis = divmod(int(ms), 1000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def rfc3339_us(us: int | None) -> str | None:
    """Microseconds since the epoch as RFC 3339 UTC with microseconds and `Z`."""
    if us is None:
        return None
    seconds, micros = divmod(int(us), 1_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


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
