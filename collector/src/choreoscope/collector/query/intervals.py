"""How often the collector measures: what its readers judge the age of a figure by.

The collector polls outbox tables and consumer lag every `--poll-interval` seconds and runs
an analysis pass every `--analyze-interval`. A figure older than a few of those intervals
is stale: no collector keeps it up to date. The CLI and the dashboard do not share the
collector's settings, so a running collector records its intervals in the store as it
starts (`record`; `collect --once` does not: it renews nothing after it), and readers take
them from there (`recorded`). A store no collector recorded them in (one an earlier version
filled) is judged by the reader's own settings (CHOREOSCOPE_POLL_INTERVAL,
CHOREOSCOPE_ANALYZE_INTERVAL), else their defaults. Of several collectors sharing a store,
the one started last is recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ..settings import SETTINGS, SettingsError, lookup
from ..store.schema import meta

KEY = "collector.intervals"


@dataclass(frozen=True)
class Intervals:
    poll_s: float  # outbox tables and consumer lag
    analyze_s: float  # analysis passes


def record(store: Any, *, poll_s: float, analyze_s: float) -> None:
    """Record the intervals of the collector writing to `store`."""
    store.set_meta(KEY, json.dumps({"poll_s": poll_s, "analyze_s": analyze_s}))


def recorded(conn: Any) -> Intervals:
    """The intervals the collector recorded, read on SQLAlchemy connection `conn`; the
    reader's settings for any it did not record (or recorded as no number > 0)."""
    text = conn.execute(select(meta.c.value).where(meta.c.key == KEY)).scalar()
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    mine = configured()
    return Intervals(poll_s=_positive(found.get("poll_s")) or mine.poll_s,
                     analyze_s=_positive(found.get("analyze_s")) or mine.analyze_s)


def configured() -> Intervals:
    """The reader's own settings (its environment, else the defaults): what a store that
    cannot say is judged by."""
    return Intervals(poll_s=_setting("poll_interval"), analyze_s=_setting("analyze_interval"))


def _positive(value: Any) -> float | None:
    if (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0):
        return float(value)
    return None


def _setting(name: str) -> float:
    try:
        value = float(lookup(name))
    except (SettingsError, ValueError):
        value = 0.0
    return value if value > 0 else float(SETTINGS[name].default)
