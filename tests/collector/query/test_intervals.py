"""The collector's intervals, recorded in the store for the CLI and the dashboard."""

from __future__ import annotations

import pytest

from choreoscope.collector.query import intervals
from choreoscope.collector.query.intervals import Intervals
from choreoscope.collector.store import Store


@pytest.fixture
def store(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.delenv("CHOREOSCOPE_POLL_INTERVAL", raising=False)
    monkeypatch.delenv("CHOREOSCOPE_ANALYZE_INTERVAL", raising=False)
    s = Store(f"sqlite:///{tmp_path}/s.db").create()
    yield s
    s.dispose()


def _read(store: Store) -> Intervals:
    with store.engine.connect() as conn:
        return intervals.recorded(conn)


def test_what_the_collector_recorded_is_read(store: Store,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded intervals win over the reader's own settings."""
    monkeypatch.setenv("CHOREOSCOPE_POLL_INTERVAL", "20")
    intervals.record(store, poll_s=60.0, analyze_s=7.5)
    assert _read(store) == Intervals(poll_s=60.0, analyze_s=7.5)


def test_a_store_without_them_is_judged_by_the_readers_settings(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing recorded (a store an earlier collector filled): the reader's environment, else
    the collector's defaults."""
    assert _read(store) == Intervals(poll_s=10.0, analyze_s=5.0)
    monkeypatch.setenv("CHOREOSCOPE_POLL_INTERVAL", "20")
    assert _read(store) == Intervals(poll_s=20.0, analyze_s=5.0)
    monkeypatch.setenv("CHOREOSCOPE_POLL_INTERVAL", "soon")  # a reader's bad setting
    assert intervals.configured() == Intervals(poll_s=10.0, analyze_s=5.0)


@pytest.mark.parametrize("value", [
    "not json", "[1, 2]", '{"poll_s": "60"}', '{"poll_s": -1}', '{"poll_s": true}',
    '{"poll_s": NaN}', '{"poll_s": Infinity}', '{"analyze_s": 0}'])
def test_a_recorded_value_that_is_no_interval_is_ignored(store: Store, value: str) -> None:
    store.set_meta(intervals.KEY, value)
    assert _read(store) == Intervals(poll_s=10.0, analyze_s=5.0)
