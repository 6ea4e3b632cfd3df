"""The time axis of a bucketed bar chart: ticks on whole buckets, never two labels alike.

Left to itself, Vega-Lite puts ticks at 30 s steps under a two-minute span of per-minute bars,
so the `%H:%M` labels repeat. `time_axis` places the ticks itself, every 1, 2, 5, 10, 15 or 30
minutes, 1, 2, 3, 6 or 12 hours, or 1, 2 or 7 days: the smallest whole-bucket step that gives
at most `max_ticks` ticks over the span. (An interval given to Vega-Lite's `tickCount` instead
breaks the chart in the Vega that Streamlit ships: it wants `minutes` where Vega-Lite's schema
allows only `minute`.)

A flow's timeline (milliseconds to hours, no buckets) takes its ticks from the same steps,
below a minute too: left to itself, Vega-Lite gave a flow of a few hundred milliseconds one
label.

`bucket_x` draws each bar over its whole bucket (a Vega-Lite time unit), on an axis over a
fixed window: left to itself, Vega-Lite centres narrow bars on their start and ends the axis at
the first and last bar, so those two are cut in half and an hour with two busy minutes shows
only those two. (The window is not given as an x2 channel's end: Vega-Lite then merges two
versions of the domain and warns in the browser console.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import altair as alt

MINUTE_MS = 60_000
_UNITS: tuple[tuple[Literal["utcyearmonthdate", "utcyearmonthdatehours",
                            "utcyearmonthdatehoursminutes"], int], ...] = (
    ("utcyearmonthdate", 86_400_000), ("utcyearmonthdatehours", 3_600_000),
    ("utcyearmonthdatehoursminutes", MINUTE_MS))
_STEPS_MS = (
    *(n * 10 ** e for e in range(3) for n in (1, 2, 5)),  # below a second: a flow's timeline
    *(n * 1000 for n in (1, 2, 5, 10, 15, 30)),
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


def time_axis(starts_ms: Iterable[int], bucket_ms: int, label_format: str,
              max_ticks: int = 8) -> alt.Axis:
    """An x axis for bars starting at `starts_ms`, one every `bucket_ms` at most."""
    values = [_datetime(ms) for ms in ticks(starts_ms, bucket_ms, max_ticks)]
    return alt.Axis(format=label_format, values=values)


def bucket_x(field: str, start_ms: int, end_ms: int, bucket_ms: int,
             label_format: str) -> alt.X:
    """An x channel for bars one bucket wide starting at `field` (UTC timestamps, whole
    buckets), on an axis over exactly [start_ms, end_ms] with ticks on whole buckets."""
    axis = time_axis(range(start_ms, end_ms, bucket_ms), bucket_ms, label_format)
    return alt.X(f"{field}:T", timeUnit=time_unit(bucket_ms), title=None, axis=axis,
                 scale=alt.Scale(domain=[_datetime(start_ms), _datetime(end_ms)]))


def time_unit(bucket_ms: int) -> alt.TimeUnitParams:
    """The UTC time unit of a bucket of whole minutes, hours or days dividing the next larger
    unit (5 minutes, 6 hours, ...): Vega-Lite draws a bar over the whole of it."""
    for unit, unit_ms in _UNITS:
        if bucket_ms % unit_ms == 0:
            return alt.TimeUnitParams(unit=unit, step=bucket_ms // unit_ms)
    raise ValueError(f"expected a bucket of whole minutes, got {bucket_ms} ms")


def _datetime(ms: int) -> alt.DateTime:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour,
                        minutes=t.minute, seconds=t.second,
                        milliseconds=t.microsecond // 1000, utc=True)
