"""50,000 spans in a burst at the OTLP receiver: no crash, bounded memory, and every span either
stored or counted as dropped — in the store's meta, the Prometheus metrics and the dashboard's
overview query."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import func, select

from choreoscope.collector import metrics
from choreoscope.collector.broker import free_port
from choreoscope.collector.query import dashboard as dq
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events, meta, spans
from choreoscope.collector.traces.receiver import DROPPED_META_KEY, OtlpReceiver
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop

SPANS = 50_000
PER_BODY = 500
MEMORY_LIMIT_MIB = 600


def _body(first: int, n: int) -> bytes:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(
        spans=[Span(trace_id=(first + i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                    name="process orders", kind=Span.SPAN_KIND_CONSUMER,
                    start_time_unix_nano=1_700_000_000_000_000_000 + i,
                    end_time_unix_nano=1_700_000_000_001_000_000 + i)
               for i in range(n)])])]).SerializeToString()


def _post(port: int, body: bytes) -> tuple[int, int]:
    """(status, spans rejected or dropped as the receiver reports them)."""
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", "/v1/traces", body=body,
                         headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status == 503:  # busy: retry, as OTLP exporters do
            time.sleep(0.05)
            continue
        rejected = 0
        if resp.status == 200:
            answer = ExportTraceServiceResponse.FromString(payload)
            rejected = answer.partial_success.rejected_spans
        return resp.status, rejected


def _burst(port: int) -> int:
    """Send SPANS spans from 8 threads at once; returns the spans reported dropped."""
    bodies = [_body(first, PER_BODY) for first in range(0, SPANS, PER_BODY)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: _post(port, b), bodies))
    assert {status for status, _ in results} == {200}
    return sum(rejected for _, rejected in results)


def _counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(spans)).scalar()
        dropped = conn.execute(select(meta.c.value).where(meta.c.key == DROPPED_META_KEY)
                               ).scalar()
    return int(stored), int(dropped or 0)


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.broker
def test_burst_into_a_collector_process(bootstrap, topic, group, tmp_path) -> None:
    """A running collector takes the burst: alive, peak RSS bounded, stored + dropped = sent."""
    url = f"sqlite:///{tmp_path}/burst.db"
    otlp, prom = free_port(), free_port()
    log = tmp_path / "collector.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
         "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
         "--otlp-port", str(otlp), "--metrics-port", str(prom), "--analyze-interval", "1",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 60
        while "OTLP/HTTP receiver on" not in log.read_text() or \
                "Prometheus metrics on" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        before = _vm(proc.pid, "VmRSS")
        dropped = _burst(otlp)
        store = Store(url)
        deadline = time.monotonic() + 120
        while sum(_counts(store)) < SPANS and time.monotonic() < deadline:
            time.sleep(0.2)
        stored, dropped_meta = _counts(store)
        assert (stored + dropped_meta, dropped_meta) == (SPANS, dropped)
        peak = _vm(proc.pid, "VmHWM")
        print(f"collector RSS {before} MiB before, peak {peak} MiB; {dropped} dropped")
        assert peak < MEMORY_LIMIT_MIB
        deadline = time.monotonic() + 30
        while True:  # the metrics snapshot refreshes every analyze interval
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=10
                                            ).read().decode()
            if f'choreoscope_spans_stored_total{{origin="otlp"}} {float(stored)}' in scrape:
                break
            assert time.monotonic() < deadline, scrape
            time.sleep(0.5)
        assert f"choreoscope_spans_dropped_total {float(dropped)}" in scrape
        assert proc.poll() is None
        store.dispose()
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_drops_beyond_the_queue_are_counted_everywhere(tmp_path, monkeypatch) -> None:
    """With a small queue the burst is partly dropped; the count is in meta, metrics, dashboard."""
    url = f"sqlite:///{tmp_path}/small.db"
    store = Store(url).create()
    receiver = OtlpReceiver(store, port=0, max_queue=2_000, batch_size=500,
                            flush_interval_s=0.5).start()
    try:
        dropped = _burst(receiver.port)
        assert receiver.flush(60)
    finally:
        receiver.stop()
    stored, dropped_meta = _counts(store)
    assert dropped > 0 and (stored + dropped_meta, dropped_meta) == (SPANS, dropped)
    registry = metrics.new_registry()
    snapshot = metrics.update_from_store(store, registry)
    assert snapshot.spans_dropped == dropped
    assert registry.get_sample_value("choreoscope_spans_dropped_total") == dropped
    assert dq.overview(store, now_ms=int(time.time() * 1000))["otlp_spans_dropped"] == dropped
    store.dispose()
    from streamlit.testing.v1 import AppTest

    from tests.dashboard.test_pages import APP

    store = Store(url)
    with store.engine.begin() as conn:  # past the dashboard's first-run page: one event
        conn.execute(events.insert().values(
            topic="orders", partition=0, offset=0, event_id="e0", flow_id="e0",
            observed_at_ms=int(time.time() * 1000), envelope="binary", data_truncated=False))
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(f"{dropped:,} spans dropped" in w.value for w in at.warning), \
        [str(e.value)[:200] for e in (*at.warning, *at.error, *at.info, *at.markdown)]
