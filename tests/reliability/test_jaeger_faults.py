"""Jaeger unreachable, slower than the timeout, or answering 500 for a long stretch: bus ingest
goes on, trace fetches resume with backoff, and nothing is marked `untraced` while Jaeger's
answer is unknown — only after it is back and said "no such trace", past the grace time.

The long stretch is compressed with a virtual clock (the fetcher and the analysis take `now_ms`)
and small settle/grace/backoff settings; the ingest part runs a real collector process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from sqlalchemy import func, select

from choreoscope.collector.analyze import AnalysisOptions, analyze
from choreoscope.collector.broker import free_port
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, spans, trace_fetches
from choreoscope.collector.traces.fetcher import TraceFetcher
from tests.collector.traces.jaeger_server import FakeJaeger, Reply, fixture
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop

T_FOUND = "0" * 31 + "1"  # the trace of the GetTrace.json fixture (1 span)
FOUND_SPAN = "0" * 15 + "2"  # its one span: the event of that trace names it
T0 = 1_700_000_000_000
GRACE_S = 30


def _traceparent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{i + 1:016x}-01".encode()


def _add(store: Store, i: int, trace_id: str, at_ms: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(events.insert().values(
            topic="orders", partition=0, offset=i, event_id=f"e{i}", type="order.placed",
            source="shop", time="2023-11-14T22:13:20Z", schema_version="1",
            correlation_id=f"flow-{i}", flow_id=f"flow-{i}", trace_id=trace_id,
            span_id=FOUND_SPAN if trace_id == T_FOUND else f"{i + 1:016x}",
            observed_at_ms=at_ms, envelope="binary",
            data_truncated=False))


def _untraced(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(r.correlation_id for r in conn.execute(
            select(anomalies.c.correlation_id).where(anomalies.c.kind == "untraced")))


def _fetches(store: Store) -> dict[str, tuple[str, int]]:
    with store.engine.connect() as conn:
        return {r.trace_id: (r.status, r.attempts) for r in conn.execute(select(trace_fetches))}


class _Switch:
    """What the fake Jaeger does now: 'ok', 'slow' (beyond the timeout) or '500'; a closed
    port plays 'unreachable'."""

    def __init__(self, jaeger: FakeJaeger) -> None:
        self.jaeger = jaeger

    def set(self, mode: str) -> None:
        found = fixture("GetTrace.json")
        missing = b'{"error":{"httpCode":404,"message":"No traces found"}}\n'
        routes = {f"/api/v3/traces/{T_FOUND}": found}
        routes.update({f"/api/v3/traces/{i + 1:032x}": missing for i in range(1, 4)})
        self.jaeger.routes.clear()
        for path, body in routes.items():
            if mode == "ok":
                self.jaeger.routes[path] = Reply(404 if body is missing else 200, body)
            elif mode == "slow":
                self.jaeger.routes[path] = Reply(200, found, delay_s=1.0)
            else:
                self.jaeger.routes[path] = Reply(500, b'{"error":{"message":"boom"}}')


def test_long_outage_then_recovery_on_a_virtual_clock(tmp_path) -> None:
    """Minutes of unreachable/slow/500 Jaeger: backoff, no untraced; after: found or untraced."""
    store = Store(f"sqlite:///{tmp_path}/j.db").create()
    _add(store, 0, T_FOUND, T0)
    for i in range(1, 4):
        _add(store, i, f"{i + 1:032x}", T0)
    options = AnalysisOptions(stuck_after_s=3600, untraced_grace_s=GRACE_S, jaeger_enabled=True)
    settings = {"settle_s": 1, "refetch_while_active_s": 60, "refetch_interval_s": 10,
                "search_services": False, "backoff_s": 2, "max_backoff_s": 20,
                "max_attempts": 50, "timeout_s": 0.3}
    now = T0
    down = TraceFetcher(store, f"http://127.0.0.1:{free_port()}", **settings)
    with FakeJaeger() as jaeger:
        switch = _Switch(jaeger)
        up = TraceFetcher(store, jaeger.url, **settings)
        passes = 0
        for fetcher, mode, seconds in ((down, "unreachable", 120), (up, "slow", 120),
                                       (up, "500", 120)):
            if mode != "unreachable":
                switch.set(mode)
            asked = len(jaeger.requests)
            end = now + seconds * 1000
            while now < end:  # one pass a second, as the collector's maintenance thread would
                fetcher.run_once(now_ms=now)
                analyze(store, options, now_ms=now)
                passes += 1
                now += 1000
            assert _untraced(store) == [], mode  # long past the grace time, still nothing
            statuses = {status for status, _a in _fetches(store).values()}
            assert statuses == {"error"}, (mode, _fetches(store))
            if mode != "unreachable":  # backoff: far fewer requests than passes
                assert 0 < len(jaeger.requests) - asked <= 4 * 12, mode
        attempts = {t: a for t, (_s, a) in _fetches(store).items()}
        assert all(3 <= a <= 40 for a in attempts.values()), attempts

        switch.set("ok")
        back_at = now
        while now < back_at + (20 + GRACE_S + 5) * 1000:
            up.run_once(now_ms=now)
            analyze(store, options, now_ms=now)
            now += 1000
    fetches = _fetches(store)
    assert fetches[T_FOUND][0] == "found"
    assert {fetches[f"{i + 1:032x}"][0] for i in range(1, 4)} == {"missing"}
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)
                            .where(spans.c.trace_id == T_FOUND)).scalar() == 1
    assert _untraced(store) == ["flow-1", "flow-2", "flow-3"]
    store.dispose()


@pytest.mark.broker
def test_ingest_goes_on_while_jaeger_hangs(bootstrap, topic, group, tmp_path: Path) -> None:
    """With every Jaeger request hanging, a running collector still stores each new event."""
    hanging = threading.Event()
    with FakeJaeger() as jaeger:
        slow = Reply(200, b"{}", delay_s=20)  # beyond the fetcher's 5 s timeout
        for i in range(400):
            jaeger.routes[f"/api/v3/traces/{i + 1:032x}"] = slow
        url = f"sqlite:///{tmp_path}/ingest.db"
        log = tmp_path / "collector.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
             "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
             "--otlp-port", "0", "--jaeger", jaeger.url, "--analyze-interval", "1",
             "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
             "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
            stdout=subprocess.DEVNULL, stderr=log.open("w"))
        p = Producer({"bootstrap.servers": bootstrap})

        def produce(first: int, last: int) -> None:
            for i in range(first, last):
                p.produce(topic, value=b'{"n":%d}' % i, headers=[
                    ("ce_specversion", b"1.0"), ("ce_id", b"ev-%d" % i),
                    ("ce_type", b"order.placed"), ("ce_source", b"shop"),
                    ("ce_time", b"2026-01-01T00:00:00Z"), ("ce_schemaversion", b"1"),
                    ("traceparent", _traceparent(i))])
            p.flush(30)

        store = Store(url)
        try:
            produce(0, 200)
            deadline = time.monotonic() + 90
            while not jaeger.requests:  # a fetch pass is now stuck on the slow Jaeger
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            hanging.set()
            produce(200, 400)
            while _count(store) < 400:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            assert len(jaeger.requests) <= 2  # one timed-out request per pass, no storm
            assert _untraced(store) == []
        finally:
            store.dispose()
            stop(proc)
        assert proc.returncode == 0, log.read_text()[-3000:]


def _count(store: Store) -> int:
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar() or 0)
    except Exception:  # noqa: BLE001 - schema not created yet
        return 0
