"""A collector killed with SIGKILL mid-ingest loses nothing and stores nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer
from sqlalchemy import func, select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

pytestmark = pytest.mark.broker

N = 10_000


def _collect(url: str, bootstrap: str, topic: str, group: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
            "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
            "--otlp-port", "0", "--batch-size", "100", "--analyze-interval", "3600",
            "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
            "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}", *extra]


def _stats(url: str) -> tuple[int, int, int]:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return tuple(conn.execute(select(
                func.count(), func.count(func.distinct(events.c.event_id)),
                func.count(func.distinct(events.c.offset.op("||")(events.c.partition))),
            ).select_from(events)).one())
    except Exception:  # noqa: BLE001 - the table is not created yet
        return (0, 0, 0)
    finally:
        store.dispose()


def test_sigkill_mid_ingest_then_restart_stores_every_event_once(
        bootstrap, topic, group, tmp_path) -> None:
    """Kill -9 during ingest of 10,000 events; after a restart each is stored exactly once."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(N):
        p.produce(topic, value=b'{"n":%d}' % i, headers=[
            ("ce_specversion", b"1.0"), ("ce_id", b"ev-%d" % i), ("ce_type", b"order.placed"),
            ("ce_source", b"shop"), ("ce_time", b"2026-01-01T00:00:00Z"),
            ("ce_schemaversion", b"1")])
    p.flush(60)
    url = f"sqlite:///{tmp_path}/restart.db"
    proc = subprocess.Popen(_collect(url, bootstrap, topic, group), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _stats(url)[0] == 0:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    at_kill = _stats(url)[0]
    assert 0 < at_kill < N  # killed in the middle
    r = subprocess.run(_collect(url, bootstrap, topic, group, "--once"), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert _stats(url) == (N, N, N)
