"""A collector killed with SIGKILL ten times at random points of ingest, restarted each time,
ends with every event stored exactly once and the flows and anomalies of an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.collector.test_two_collectors import _canonical, _produce, _state
from tests.conftest import HEARTBEAT_INTERVAL_MS, PG_ADMIN_URL, SESSION_TIMEOUT_MS

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

FLOWS = 800
KILLS = 10
SEED = 20261126


def _collect(url: str, bootstrap: str, topic: str, group: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
            "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
            "--otlp-port", "0", "--batch-size", "25", "--analyze-interval", "1",
            "--stuck-after", "3600", "--poll-interval", "3600",
            "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
            "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}", *extra]


def _counts(url: str) -> tuple[int, int, int]:
    """(rows, distinct positions, distinct event ids) in `events`; zeros before the schema."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return tuple(conn.execute(select(
                func.count(),
                func.count(func.distinct(func.concat(events.c.partition, "/", events.c.offset))),
                func.count(func.distinct(events.c.event_id)),
            ).select_from(events)).one())
    except Exception:  # noqa: BLE001 - the schema is not created yet
        return (0, 0, 0)
    finally:
        store.dispose()


def _kill_at(cmd: list[str], url: str, target: int, log: Path) -> int:
    """Start a collector, SIGKILL it once `target` rows are stored; returns the rows then."""
    with log.open("a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _counts(url)[0] >= target:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"collector exited early: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _counts(url)[0]


def test_ten_sigkills_lose_nothing_and_duplicate_nothing(bootstrap, topic, postgres_url,
                                                         tmp_path) -> None:
    """Ten SIGKILLs at random stored counts, then a restart: exactly-once events, same findings."""
    n = _produce(bootstrap, topic, 0, FLOWS)
    ids = FLOWS * 3  # every flow has three distinct events (duplicates reuse an id)
    group = f"g-kill-{uuid.uuid4().hex[:8]}"
    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(n // 50, n * 9 // 10), KILLS))
    log = tmp_path / "killed.log"
    started = time.monotonic()
    at_kill = [_kill_at(_collect(postgres_url, bootstrap, topic, group), postgres_url, t, log)
               for t in targets]
    print(f"kills at {at_kill} of {n} in {time.monotonic() - started:.1f}s")
    assert all(0 < stored < n for stored in at_kill), (at_kill, n)  # each kill mid-ingest
    r = subprocess.run(_collect(postgres_url, bootstrap, topic, group, "--once"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _counts(postgres_url) == (n, n, ids)

    reference_db = f"cs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'create database "{reference_db}"')
    reference = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + reference_db
    try:
        r = subprocess.run(_collect(reference, bootstrap, topic, f"g-ref-{uuid.uuid4().hex[:8]}",
                                    "--once", "--batch-size", "5000"), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _counts(reference) == (n, n, ids)
        killed, uninterrupted = _state(postgres_url), _state(reference)
        assert len(killed[0]) == FLOWS
        assert {row[1] for row in killed[1]} >= {"duplicate", "envelope", "out_of_order"}
        assert killed[0] == uninterrupted[0]
        assert _canonical(killed[1]) == _canonical(uninterrupted[1])
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{reference_db}" with (force)')
