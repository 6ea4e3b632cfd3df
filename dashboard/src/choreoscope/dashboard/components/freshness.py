"""When a polled figure was measured: `as of 03:05:13 UTC, 15 min ago`, flagged when stale.

The collector measures outbox tables and consumer lag every `poll_interval` seconds (which it
records in the store: query/intervals.py) and the store keeps the last measurement, so after
the collector stops the pages would show old figures as if current. Each such figure says when it was measured; one older than
`STALE_POLLS` poll intervals is flagged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from choreoscope.collector.query.formatting import STALE_POLLS

from .. import data
from . import fmt

__all__ = ["STALE_POLLS", "as_of", "is_stale", "show"]


def as_of(at_ms: int | None, now_ms: int) -> str:
    """`as of 03:05:13 UTC, 15 min ago`, with the date when it is not today's; `never
    measured` for None."""
    if at_ms is None:
        return "never measured"
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    same_day = at.date() == datetime.fromtimestamp(now_ms / 1000, UTC).date()
    when = at.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")
    return f"as of {when} UTC, {fmt.ago(now_ms - at_ms)} ago"


def is_stale(at_ms: int | None, now_ms: int, poll_s: float) -> bool:
    """Whether a measurement is missing or older than `STALE_POLLS` poll intervals."""
    return at_ms is None or now_ms - at_ms > STALE_POLLS * poll_s * 1000


def show(what: str, at_ms: int | None, *, where: Any = st, compact: bool = False) -> bool:
    """Say under a figure when `what` was measured: a caption, or when stale a warning (an
    orange caption if `compact`). Returns whether it is stale."""
    now, poll_s = data.now_ms(), data.intervals(data.url()).poll_s
    line = f"{what} {as_of(at_ms, now)}"
    if not is_stale(at_ms, now, poll_s):
        where.caption(line)
        return False
    if compact:
        where.caption(f":orange[:material/history: **Stale:** {line}]")
    else:
        where.warning(f"**Stale:** {line}, though the collector measures every {poll_s:g} s. "
                      "It may be stopped, or unable to measure.", icon=":material/history:")
    return True
