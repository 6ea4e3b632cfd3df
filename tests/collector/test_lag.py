"""Consumer lag from the broker's admin API into the store."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import select

from choreoscope.collector.lag import LagMonitor
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import consumer_lag

pytestmark = pytest.mark.broker


def _stored(store: Store) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(consumer_lag).order_by(
            consumer_lag.c.topic, consumer_lag.c.partition))]


def test_lag_of_a_group_is_end_minus_committed(bootstrap, topic, group, tmp_path) -> None:
    """Lag per partition is the end offset minus the group's committed offset."""
    p = Producer({"bootstrap.servers": bootstrap})
    for _i in range(5):
        p.produce(topic, value=b"x", partition=0)
        p.flush(10)  # one record per batch: exact end offsets on every broker
    p.produce(topic, value=b"x", partition=1)
    p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 1)],
             asynchronous=False)
    c.close()
    store = Store(f"sqlite:///{tmp_path}/lag.db").create()
    monitor = LagMonitor(store, bootstrap, groups=[group])
    rows = monitor.poll_once(now_ms=1000)
    assert sorted((r["topic"], r["partition"], r["committed"], r["end_offset"], r["lag"])
                  for r in rows) == [(topic, 0, 2, 5, 3), (topic, 1, 1, 1, 0)]
    assert _stored(store) == [(group, topic, 0, 2, 5, 3, 1000), (group, topic, 1, 1, 1, 0, 1000)]
    monitor.poll_once(now_ms=2000)  # replaces, never accumulates
    assert [r[-1] for r in _stored(store)] == [2000, 2000]
    store.dispose()


def test_all_groups_are_measured_by_default(bootstrap, topic, group, tmp_path) -> None:
    """Without a group list every consumer group of the cluster is measured."""
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=b"x", partition=0)
    p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()
    store = Store(f"sqlite:///{tmp_path}/lag.db").create()
    rows = LagMonitor(store, bootstrap).poll_once(now_ms=5)
    assert {"group_name": group, "topic": topic, "partition": 0, "committed": 0,
            "end_offset": 1, "lag": 1, "measured_at_ms": 5} in rows
    store.dispose()


def test_unknown_group_has_no_rows(bootstrap, tmp_path) -> None:
    """A group that never committed yields no lag rows and no error."""
    store = Store(f"sqlite:///{tmp_path}/lag.db").create()
    assert LagMonitor(store, bootstrap, groups=["never-seen-group"]).poll_once() == []
    store.dispose()
