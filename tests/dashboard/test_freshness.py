"""When a polled figure was measured, and when it counts as stale."""

from __future__ import annotations

from choreoscope.dashboard.components.fmt import ago
from choreoscope.dashboard.components.freshness import as_of, is_stale
from tests.dashboard.store_rows import T0

DAY_MS = 86_400_000


def test_as_of_gives_the_time_and_how_long_ago() -> None:
    """The time of day (UTC) on the same day, the date too on another; None was never."""
    assert as_of(T0 + 313_000, T0 + 313_000 + 15 * 60_000) == "as of 00:05:13 UTC, 15 min ago"
    assert as_of(T0, T0 + DAY_MS + 3_600_000) == "as of 2026-01-01 00:00:00 UTC, 1 d 1 h ago"
    assert as_of(None, T0) == "never measured"


def test_ago_is_coarse() -> None:
    assert [ago(ms) for ms in (400, 59_400, 75_000, 3_725_000, 2 * DAY_MS + 7_200_000)] == [
        "0 s", "59 s", "1 min", "1 h 2 min", "2 d 2 h"]


def test_stale_after_three_poll_intervals() -> None:
    """With polls 10 s apart a figure is current up to 30 s old; a missing one is stale."""
    assert [is_stale(T0, T0 + age, 10.0) for age in (0, 30_000, 30_001)] == [
        False, False, True]
    assert is_stale(None, T0, 10.0)
