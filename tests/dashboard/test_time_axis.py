"""Tick times of the bucketed time charts: whole steps of at least one bucket, few of them."""

from __future__ import annotations

from choreoscope.dashboard.components.time_axis import MINUTE_MS, ticks, time_axis

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
