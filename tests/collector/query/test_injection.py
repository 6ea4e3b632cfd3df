"""SQL-injection strings through every filter are plain values: no match, no damage."""

from __future__ import annotations

from sqlalchemy import func, select

from choreoscope.collector.query import (
    count_anomalies_by_kind,
    count_flows_by_status,
    get_flow,
    list_anomalies,
    list_flows,
    search_flows,
)
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, flows, spans
from tests.collector.query import expected

ATTACKS = [
    "' OR '1'='1",
    "'; DROP TABLE flows; --",
    "\" OR 1=1 --",
    "ord-1' UNION SELECT * FROM events --",
    "%' OR correlation_id LIKE '%",
    "\\'; DELETE FROM anomalies; --",
    "ord-1\x00",  # PostgreSQL refuses NUL, SQLite's LIKE stops at it: never a match
]


def _sizes(store: Store) -> tuple[int, ...]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (events, flows, spans, anomalies))


def test_flow_filters_harmless(store: Store) -> None:
    """Every filter treats each attack string as a value: nothing matches, nothing changes."""
    before = _sizes(store)
    for attack in ATTACKS:
        _attack_every_filter(store, attack)
    assert _sizes(store) == before
    assert list_flows(store) == expected.FLOWS


def _attack_every_filter(store: Store, attack: str) -> None:
    for name in ("status", "event_type", "service", "subject", "correlation_id", "variant",
                 "anomaly_kind"):
        page = _safely(lambda name=name: search_flows(store, **{name: attack}))
        assert page is None or (page["total"], page["flows"]) == (0, []), name
        counts = _safely(lambda name=name: count_flows_by_status(store, **{name: attack}))
        # the per-status counts ignore a status filter by design
        assert counts is None or sum(counts.values()) == (3 if name == "status" else 0), name
    assert _safely(lambda: list_flows(store, status=attack)) in (None, [])
    assert _safely(lambda: get_flow(store, attack)) is None
    for name in ("kind", "correlation_id", "subject", "service"):
        assert _safely(lambda name=name: list_anomalies(store, **{name: attack})) in (None, [])


def test_anomaly_counts_unchanged_after_attacks(store: Store) -> None:
    """After every attack string, counts per kind are those of the data."""
    for attack in ATTACKS:
        _safely(lambda attack=attack: list_anomalies(store, kind=attack))
    assert count_anomalies_by_kind(store)["duplicate"] == 1


def _safely(call):  # type: ignore[no-untyped-def]
    """The call's result; no attack string may make the database raise."""
    return call()
