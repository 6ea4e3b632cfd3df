"""The anomalies queries on SQLite and PostgreSQL."""

from __future__ import annotations

from choreoscope.collector.query import count_anomalies_by_kind, list_anomalies
from choreoscope.collector.store import Store
from tests.collector.query import expected
from tests.collector.query._data import T0


def test_list_anomalies_exact(store: Store) -> None:
    """Every anomaly comes back in the DESIGN shape, in detection order."""
    assert list_anomalies(store) == expected.ANOMALIES


def test_list_anomalies_filters(store: Store) -> None:
    """Kind, flow, subject, service, time and paging filter exactly."""
    assert list_anomalies(store, kind="stuck_flow") == [expected.ANOMALY_STUCK]
    assert list_anomalies(store, correlation_id="ord-3") == [expected.ANOMALY_FAILED,
                                                             expected.ANOMALY_OUTBOX]
    assert list_anomalies(store, subject="ord_1") == [expected.ANOMALY_DUPLICATE]
    assert list_anomalies(store, service="orders") == [expected.ANOMALY_OUTBOX,
                                                       expected.ANOMALY_STUCK]
    assert list_anomalies(store, since_ms=T0 + 125_000) == [expected.ANOMALY_STUCK]
    assert list_anomalies(store, offset=1, limit=2) == expected.ANOMALIES[1:3]
    assert list_anomalies(store, kind="orphan") == []


def test_count_by_kind(store: Store) -> None:
    """Counts cover every kind, zeros included."""
    assert count_anomalies_by_kind(store) == {
        "out_of_order": 0, "duplicate": 1, "orphan": 0, "stuck_flow": 1, "failed_handler": 1,
        "envelope": 0, "untraced": 0, "stuck_outbox": 1}
    assert count_anomalies_by_kind(store, since_ms=T0 + 125_000)["stuck_flow"] == 1
    assert count_anomalies_by_kind(store, since_ms=T0 + 125_000)["duplicate"] == 0
