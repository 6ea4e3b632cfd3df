"""RFC 3339 UTC timestamps for `ce_time`, cheap enough to take on every send."""

from __future__ import annotations

import time

_cached: tuple[int, str] = (-1, "")


def utc_now_rfc3339() -> str:
    """Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, UTC)."""
    global _cached
    ns = time.time_ns()
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
    second, milli = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{milli:03d}Z"
