"""Two collector processes in one consumer group on one PostgreSQL store agree with one."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from sqlalchemy import func, select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, flows
from tests.conftest import HEARTBEAT_INTERVAL_MS, PG_ADMIN_URL, SESSION_TIMEOUT_MS

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

FLOWS = 60


def _collector(url: str, bootstrap: str, topic: str, group: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
           "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
           "--otlp-port", "0", "--analyze-interval", "1", "--stuck-after", "3600",
           "--batch-size", "50",
           "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
           "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"]
    return subprocess.Popen(cmd, stderr=log.open("w"), stdout=subprocess.DEVNULL)


def _event(p: Producer, topic: str, eid: str, kind: str, corr: str, cause: str | None,
           source: str = "shop") -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", eid.encode()), ("ce_type", kind.encode()),
               ("ce_time", b"2026-01-01T00:00:00Z"), ("ce_schemaversion", b"1"),
               ("ce_correlationid", corr.encode()), ("ce_subject", corr.encode())]
    if source:
        headers.append(("ce_source", source.encode()))
    if cause:
        headers.append(("ce_causationid", cause.encode()))
    p.produce(topic, value=json.dumps({"id": eid}).encode(), headers=headers,
              key=corr.encode())


def _produce(bootstrap: str, topic: str, first: int, last: int) -> int:
    """Three-hop flows, with a duplicate publish, an effect before its cause and a bad envelope."""
    p = Producer({"bootstrap.servers": bootstrap})
    n = 0
    for f in range(first, last):
        corr = f"flow-{f:03d}"
        chain = [(f"{corr}-a", "order.placed", None), (f"{corr}-b", "payment.captured",
                 f"{corr}-a"), (f"{corr}-c", "order.shipped", f"{corr}-b")]
        if f % 10 == 3:
            chain[1], chain[2] = chain[2], chain[1]  # effect reaches the bus before its cause
        for eid, kind, cause in chain:
            _event(p, topic, eid, kind, corr, cause, source="" if f % 10 == 7 else "shop")
            n += 1
        if f % 10 == 5:
            _event(p, topic, f"{corr}-c", "order.shipped", corr, f"{corr}-b")  # duplicate
            n += 1
    p.flush(30)
    return n


def _wait_for(what: str, check, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _state(url: str) -> tuple[list[tuple], list[tuple]]:
    store = Store(url)
    with store.engine.connect() as conn:
        f = [tuple(r) for r in conn.execute(
            select(*[c for c in flows.c if c.name != "updated_at_ms"])
            .order_by(flows.c.correlation_id))]
        a = [tuple(r) for r in conn.execute(
            select(*[c for c in anomalies.c if c.name not in ("id", "detected_at_ms")])
            .order_by(anomalies.c.key))]
    store.dispose()
    return f, a


def _settled(url: str, n_events: int) -> bool:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(events)).scalar()
            distinct = conn.execute(select(func.count(func.distinct(events.c.event_id)))).scalar()
            counted = conn.execute(select(func.count(), func.sum(flows.c.event_count))).one()
        return stored == n_events and tuple(counted) == (FLOWS, distinct)
    except Exception:  # noqa: BLE001 - tables not created yet
        return False
    finally:
        store.dispose()


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_two_collectors_in_one_group_give_the_same_flows_and_anomalies(
        bootstrap, topic, postgres_url, tmp_path) -> None:
    """Flows and anomalies written by two group members equal those of a single collector."""
    single_db = f"cs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'create database "{single_db}"')
    single_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + single_db
    procs: list[subprocess.Popen] = []
    try:
        n = _produce(bootstrap, topic, 0, 1)  # creates the topic (4 partitions)
        group = f"g-two-{uuid.uuid4().hex[:8]}"
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = [_collector(postgres_url, bootstrap, topic, group, log) for log in logs]
        assigned = re.compile(r"assigned [1-9]\d* partitions")
        _wait_for("both members to hold partitions",
                  lambda: all(assigned.search(log.read_text()) for log in logs))
        n += _produce(bootstrap, topic, 1, FLOWS)
        procs.append(_collector(single_url, bootstrap, topic, f"g-one-{uuid.uuid4().hex[:8]}",
                                tmp_path / "single.log"))
        _wait_for("the pair to settle", lambda: _settled(postgres_url, n))
        _wait_for("the single collector to settle", lambda: _settled(single_url, n))
        _stop(*procs)
        read = [int(m.group(1)) for log in logs
                for m in re.finditer(r"stopping: (\d+) records read", log.read_text())]
        assert len(read) == 2 and sum(read) == n and min(read) > 0
        pair, single = _state(postgres_url), _state(single_url)
        assert len(pair[0]) == FLOWS
        assert {row[1] for row in anomalies_kinds(pair[1])} >= {"duplicate", "envelope",
                                                                 "out_of_order"}
        assert pair[0] == single[0]
        assert _canonical(pair[1]) == _canonical(single[1])
    finally:
        _stop(*procs)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{single_db}" with (force)')


def _canonical(rows: list[tuple]) -> list[tuple]:
    """Anomaly rows with the record list of `extra` in bus order.

    The duplicate detector lists records with the same broker timestamp in whatever order
    the store returned them; that order is not part of the finding."""
    out = []
    for row in rows:
        extra = json.loads(row[-1]) if row[-1] else None
        if isinstance(extra, dict) and isinstance(extra.get("records"), list):
            extra["records"].sort(key=lambda r: (r.get("topic"), r.get("partition"),
                                                 r.get("offset")))
        out.append((*row[:-1], extra))
    return out


def anomalies_kinds(rows: list[tuple]) -> list[tuple]:
    """(key, kind) of anomaly rows as `_state` returns them."""
    return [(row[0], row[1]) for row in rows]
