"""The PostgreSQL store made unreachable under a running collector (a TCP proxy in front of
the server is cut, the server itself keeps running): the collector stops committing offsets,
retries, and once the store is back stores everything, each record once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop
from tests.reliability._proxy import TcpProxy
from tests.reliability._wait import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def _produce(bootstrap: str, topic: str, first: int, last: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(first, last):
        p.produce(topic, value=b'{"n":%d}' % i, key=b"k%d" % (i % 4), headers=[
            ("ce_specversion", b"1.0"), ("ce_id", b"ev-%d" % i), ("ce_type", b"order.placed"),
            ("ce_source", b"shop"), ("ce_time", b"2026-01-01T00:00:00Z"),
            ("ce_schemaversion", b"1")])
    p.flush(30)


def _stored(url: str) -> tuple[int, int]:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return tuple(conn.execute(select(func.count(), func.count(
                func.distinct(events.c.event_id))).select_from(events)).one())
    except Exception:  # noqa: BLE001 - schema not there yet
        return (0, 0)
    finally:
        store.dispose()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on `topic` (records it acknowledged)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def test_store_outage_stops_commits_and_loses_nothing(bootstrap, topic, postgres_url,
                                                      tmp_path) -> None:
    """While the store is cut no offset is committed; after it is back all 300 are stored once."""
    url = make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    via_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    group = f"g-outage-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "collector.log"
    _produce(bootstrap, topic, 0, 100)
    proc = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", via_proxy, "collect",
         "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
         "--otlp-port", "0", "--batch-size", "50", "--analyze-interval", "1",
         "--poll-interval", "1",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        wait_for("the first 100", lambda: _stored(postgres_url) == (100, 100))
        wait_for("their commit", lambda: _committed(bootstrap, group, topic) == 100)
        proxy.cut()
        _produce(bootstrap, topic, 100, 300)
        wait_for("the collector to notice", lambda: "store unavailable" in log.read_text(), 60)
        time.sleep(3)  # retries go on; nothing may be committed meanwhile
        assert _committed(bootstrap, group, topic) == 100
        assert _stored(postgres_url) == (100, 100)
        assert proc.poll() is None, log.read_text()[-2000:]
        proxy.restore()
        wait_for("everything after the outage", lambda: _stored(postgres_url) == (300, 300), 120)
        wait_for("the commits to catch up", lambda: _committed(bootstrap, group, topic) == 300)
        assert proc.poll() is None
    finally:
        stop(proc)
        proxy.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "offsets not committed" in log.read_text()
