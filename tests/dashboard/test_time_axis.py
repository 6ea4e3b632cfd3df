"""Tick times of the bucketed time charts: whole steps of at least one bucket, few of them;
bars over whole buckets on an axis over the window shown."""

from __future__ import annotations

import pytest

from choreoscope.collector.query.dashboard import BUCKETS_MS
from choreoscope.dashboard.components.time_axis import (
    MINUTE_MS,
    bucket_x,
    ticks,
    time_axis,
    time_unit,
)

T0 = 1_795_741_440_000  # 2026-11-27T01:04:00Z, a whole hour plus 4 minutes
HOUR_MS = 60 * MINUTE_MS


def test_two_minutes_of_minute_bars_get_one_tick_per_minute() -> None:
    """Two bars a minute apart: ticks on each minute, not every 30 s (labels 01:04, 01:04)."""
    assert ticks([T0, T0 + MINUTE_MS], MINUTE_MS) == [T0, T0 + MINUTE_MS]


def test_an_hour_of_minute_bars_gets_ten_minute_ticks() -> None:
    starts = [T0 + i * MINUTE_MS for i in range(60)]
    assert ticks(starts, MINUTE_MS) == [T0 + 6 * MINUTE_MS + i * 10 * MINUTE_MS
                                        for i in range(6)]


def test_three_days_of_hour_bars_get_twelve_hour_ticks() -> None:
    starts = [T0 - 4 * MINUTE_MS + i * HOUR_MS for i in range(72)]  # from 01:00
    got = ticks(starts, HOUR_MS)
    assert (got[0], got[1] - got[0], len(got)) == (T0 - 4 * MINUTE_MS + 11 * HOUR_MS,
                                                   12 * HOUR_MS, 6)


def test_no_bars_no_ticks_and_the_axis_carries_them() -> None:
    assert ticks([], MINUTE_MS) == []
    axis = time_axis([T0, T0 + MINUTE_MS], MINUTE_MS, "%H:%M").to_dict()
    assert axis["format"] == "%H:%M"
    assert [(v["hours"], v["minutes"], v["utc"]) for v in axis["values"]] == [
        (1, 4, True), (1, 5, True)]


def test_bucket_x_spans_the_window_with_bars_over_whole_buckets() -> None:
    """The axis runs over exactly the window given; each bar covers its whole minute."""
    x = bucket_x("minute", T0, T0 + HOUR_MS, MINUTE_MS, "%H:%M").to_dict()
    assert x["field"] == "minute" and x["type"] == "temporal"
    assert x["timeUnit"] == {"unit": "utcyearmonthdatehoursminutes", "step": 1}
    assert [(d["hours"], d["minutes"], d["seconds"], d["utc"]) for d in x["scale"]["domain"]] == [
        (1, 4, 0, True), (2, 4, 0, True)]
    assert [(v["hours"], v["minutes"]) for v in x["axis"]["values"]] == [
        (1, 10), (1, 20), (1, 30), (1, 40), (1, 50), (2, 0)]


def test_time_unit_of_every_bucket_of_the_charts() -> None:
    """Each bucket size the query layer picks is a Vega-Lite UTC time unit with a step."""
    units = [time_unit(b).to_dict() for b in BUCKETS_MS]
    assert [(u["unit"], u["step"]) for u in units] == [
        ("utcyearmonthdatehoursminutes", 1), ("utcyearmonthdatehoursminutes", 5),
        ("utcyearmonthdatehoursminutes", 15), ("utcyearmonthdatehours", 1),
        ("utcyearmonthdatehours", 6), ("utcyearmonthdate", 1)]
    with pytest.raises(ValueError, match="expected a bucket of whole minutes, got 90000 ms"):
        time_unit(90_000)


def test_a_flow_of_a_few_hundred_milliseconds_gets_several_ticks() -> None:
    """A flow's timeline has no buckets: its ticks come from sub-second steps as well, a few
    of them over any span (Vega-Lite alone gave a 383 ms flow one label)."""
    assert ticks([T0 + 750, T0 + 1_133], 1, 6) == [T0 + 800, T0 + 900, T0 + 1_000, T0 + 1_100]
    assert ticks([T0, T0 + 200], 1, 6) == [T0 + 50 * i for i in range(5)]
    assert ticks([T0, T0 + 3_200], 1, 6) == [T0 + 1_000 * i for i in range(4)]
    # 90 minutes from 01:04: on the half hours 01:30, 02:00, 02:30
    assert ticks([T0, T0 + 90 * MINUTE_MS], 1, 6) == [T0 + m * MINUTE_MS for m in (26, 56, 86)]
