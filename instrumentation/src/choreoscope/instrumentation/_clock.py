"""RFC 3339 UTC timestamps for `ce_time` (now, cheap enough to take on every send, or of a
given epoch-milliseconds time) and for the outbox's time columns; and reading one back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_cached: tuple[int, str] = (-1, "")


def utc_now_rfc3339() -> str:
    """Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, UTC)."""
    return rfc3339_from_ns(time.time_ns())


def rfc3339_from_ns(ns: int) -> str:
    """Epoch nanoseconds as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, UTC)."""
    global _cached
    second, rest = divmod(ns, 1_000_000_000)
    cached_second, prefix = _cached
    if second != cached_second:
        # The date and time of day change once a second: format them once a second.
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _cached = (second, prefix)
    return f"{prefix}.{rest // 1000:06d}Z"


def rfc3339_from_ms(ms: object) -> str | None:
    """Epoch milliseconds (a record's `timestamp_ms`) as `YYYY-MM-DDTHH:MM:SS.fffZ`; None for
    anything that is not a non-negative int a date can show (kafka-python judges it)."""
    if type(ms) is not int or not 0 <= ms < 253_402_300_800_000:  # before year 10000
        return None
    return format_ms(ms)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_MICROSECOND = timedelta(microseconds=1)


def epoch_us(text: str) -> int | None:
    """Microseconds since the epoch of an RFC 3339 time; None unless it is one with an offset.

    Read as RFC 3339 allows and `datetime` alone does not: `t`/`z` in lower case, and a leap
    second `:60`, taken as the first instant of the next second (as POSIX time does)."""
    if not text.isascii():  # datetime reads other scripts' digits (and ² in places)
        return None
    value = text.upper()
    leap = value[16:19] == ":60"
    if leap:
        value = value[:17] + "59" + value[19:]
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            return None
        if leap:
            parsed = parsed.replace(microsecond=0) + timedelta(seconds=1)
        return (parsed - _EPOCH) // _MICROSECOND
    except (ValueError, OverflowError):
        return None
