"""An outbox database cut under a running collector (a TCP proxy in front of PostgreSQL) is shown
unreachable — in the CLI, the metrics and the dashboard's overview — never as healthy, and the
monitor recovers by itself once it is back. (`tests/collector/test_outbox_monitor.py` covers a
database that never existed, a missing table and a refusing server at the monitor level.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest
from sqlalchemy.engine import make_url

from choreoscope.collector.broker import free_port
from choreoscope.collector.query import dashboard as dq
from choreoscope.instrumentation.outbox import Outbox
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop
from tests.reliability._proxy import TcpProxy
from tests.reliability._wait import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def _outbox(url: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", "--store", url,
                        "outbox", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait(what: str, check) -> None:  # the store and the metrics endpoint may not answer yet
    wait_for(what, check, 60, ignoring=(Exception,))


def _metric(port: int, name: str) -> str:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next((line.rsplit(" ", 1)[1] for line in text.splitlines()
                 if line.startswith(name)), "")


def test_cut_outbox_is_unreachable_then_recovers(bootstrap, topic, group, postgres_url,
                                                 tmp_path) -> None:
    """Cut: reachable false with an error everywhere; restored: reachable with fresh figures."""
    url = make_url(postgres_url)
    box = Outbox(postgres_url, service="orders")
    box.create_table()
    with psycopg.connect(postgres_url) as conn:
        box.add(conn, aggregatetype="order", aggregateid="o-1", event_type="order.placed",
                data={"n": 1})
        conn.commit()
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    via_proxy = url.set(port=proxy.port, password="outbox-s3cret").render_as_string(
        hide_password=False)
    store = f"sqlite:///{tmp_path}/store.db"
    prom = free_port()
    log = tmp_path / "collector.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", store, "collect",
         "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
         "--otlp-port", "0", "--outbox", f"orders={via_proxy}", "--poll-interval", "0.5",
         "--analyze-interval", "0.5", "--metrics-port", str(prom),
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        _wait("a healthy poll", lambda: _outbox(store)[0]["reachable"]
              and _outbox(store)[0]["pending"] == 1)
        proxy.cut()
        _wait("the cut to show", lambda: not _outbox(store)[0]["reachable"])
        [row] = _outbox(store)
        assert row["last_error"] and "outbox-s3cret" not in json.dumps(row)
        _wait("the metric to say unreachable",
              lambda: _metric(prom, 'choreoscope_outbox_reachable{source="orders"}') == "0.0")
        reader = dq.open_readonly(store)
        assert dq.overview(reader, now_ms=int(time.time() * 1000))["outbox_unreachable"] == 1
        with psycopg.connect(postgres_url) as conn:  # the backlog grows meanwhile
            box.add(conn, aggregatetype="order", aggregateid="o-2", event_type="order.placed",
                    data={"n": 2})
            conn.commit()
        proxy.restore()
        _wait("recovery", lambda: _outbox(store)[0]["reachable"]
              and _outbox(store)[0]["pending"] == 2)
        assert _outbox(store)[0]["last_error"] is None
        _wait("the metric to recover",
              lambda: _metric(prom, 'choreoscope_outbox_reachable{source="orders"}') == "1.0")
        assert dq.overview(reader, now_ms=int(time.time() * 1000))["outbox_unreachable"] == 0
        reader.dispose()
        assert proc.poll() is None
    finally:
        stop(proc)
        proxy.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "outbox-s3cret" not in log.read_text()
