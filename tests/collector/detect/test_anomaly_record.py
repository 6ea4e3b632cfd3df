"""`record`: anomalies are written once by key, refreshed when they ask for it, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from choreoscope.collector.detect.anomaly import Anomaly, record
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/anomalies.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url).create()
    yield s
    s.dispose()


def orphan(n: int, detail: str = "caused by an event never seen", **kw: Any) -> Anomaly:
    return Anomaly(kind="orphan", key=f"evt-{n:05d}", detail=detail,
                   correlation_id=f"corr-{n // 2:05d}", event_id=f"evt-{n:05d}", **kw)


def write(store: Store, found: list[Anomaly], at_ms: int) -> int:
    with store.engine.begin() as conn:
        return record(store, conn, found, at_ms)


def stored(store: Store) -> dict[str, tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return {r.key: (r.detail, r.correlation_id, r.detected_at_ms, r.extra)
                for r in conn.execute(select(anomalies))}


def test_new_anomalies_are_written_once_and_counted(store: Store) -> None:
    assert write(store, [orphan(1), orphan(2)], 1000) == 2
    assert write(store, [orphan(1), orphan(2), orphan(3)], 2000) == 1
    assert stored(store) == {
        "orphan:evt-00001": ("caused by an event never seen", "corr-00000", 1000, None),
        "orphan:evt-00002": ("caused by an event never seen", "corr-00001", 1000, None),
        "orphan:evt-00003": ("caused by an event never seen", "corr-00001", 2000, None),
    }


def test_a_recorded_anomaly_changes_only_when_it_asks_for_a_refresh(store: Store) -> None:
    write(store, [orphan(1), orphan(2)], 1000)
    assert write(store, [orphan(1, "a later text"),
                         orphan(2, "a later text", refresh=True, extra={"seen": 2})], 2000) == 0
    assert stored(store) == {
        "orphan:evt-00001": ("caused by an event never seen", "corr-00000", 1000, None),
        "orphan:evt-00002": ("a later text", "corr-00001", 1000, '{"seen": 2}'),
    }


def test_a_key_found_twice_in_one_batch_is_one_row_the_last_found(store: Store) -> None:
    assert write(store, [orphan(1), orphan(1, "found again")], 1000) == 1
    assert stored(store)["orphan:evt-00001"][0] == "found again"


def test_a_large_batch_half_recorded_counts_exactly_the_new_half(store: Store) -> None:
    write(store, [orphan(n) for n in range(0, 3000, 2)], 1000)
    assert write(store, [orphan(n) for n in range(3000)], 2000) == 1500
    rows = stored(store)
    assert len(rows) == 3000
    assert {rows[f"orphan:evt-{n:05d}"][2] for n in range(0, 3000, 2)} == {1000}
    assert {rows[f"orphan:evt-{n:05d}"][2] for n in range(1, 3000, 2)} == {2000}


def test_anomalies_found_again_are_not_written_again(store: Store) -> None:
    """An analysis pass offers every anomaly it finds; those recorded before cost a lookup,
    not an insert."""
    found = [orphan(n) for n in range(1200)]
    write(store, found, 1000)
    inserted: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserted.append(repr(parameters))

    event.listen(store.engine, "before_cursor_execute", watch)
    try:
        assert write(store, [*found, orphan(5000)], 2000) == 1
    finally:
        event.remove(store.engine, "before_cursor_execute", watch)
    assert any("orphan:evt-05000" in p for p in inserted)
    assert not any("orphan:evt-00000" in p or "orphan:evt-01199" in p for p in inserted)
    assert len(stored(store)) == 1201
