"""The time axis of a bucketed bar chart: ticks on whole buckets, never two labels alike.

Left to itself, Vega-Lite puts ticks at 30 s steps under a two-minute span of per-minute bars,
so the `%H:%M` labels repeat. `time_axis` places the ticks itself, every 1, 2, 5, 10, 15 or 30
minutes, 1, 2, 3, 6 or 12 hours, or 1, 2 or 7 days: the smallest whole-bucket step that gives
at most `max_ticks` ticks over the span. (An interval given to Vega-Lite's `tickCount` instead
breaks the chart in the Vega that Streamlit ships: it wants `minutes` where Vega-Lite's schema
allows only `minute`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import altair as alt

MINUTE_MS = 60_000
_STEPS_MS = (
    *(n * MINUTE_MS for n in (1, 2, 5, 10, 15, 30)),
    *(n * 3_600_000 for n in (1, 2, 3, 6, 12)),
    *(n * 86_400_000 for n in (1, 2, 7)),
)


def ticks(starts_ms: Iterable[int], bucket_ms: int, max_ticks: int = 8) -> list[int]:
    """Tick times (epoch ms) on whole steps of at least one bucket, at most `max_ticks`."""
    starts = [int(s) for s in starts_ms]
    if not starts:
        return []
    first, last = min(starts), max(starts) + bucket_ms
    step = next((s for s in _STEPS_MS if s >= bucket_ms and (last - first) / s <= max_ticks),
                _STEPS_MS[-1])
    start = -(-first // step) * step  # the first whole step at or after the first bar
    return list(range(start, max(starts) + 1, step))


def time_axis(starts_ms: Iterable[int], bucket_ms: int, label_format: str) -> alt.Axis:
    """An x axis for bars starting at `starts_ms`, one every `bucket_ms` at most."""
    values = [_datetime(ms) for ms in ticks(starts_ms, bucket_ms)]
    return alt.Axis(format=label_format, values=values)


def _datetime(ms: int) -> alt.DateTime:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour,
                        minutes=t.minute, utc=True)
