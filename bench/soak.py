"""Soak: N minutes at R events/s through instrumented producers and consumers, with the
collector and the dashboard's queries running. A bench, not a test.

One embedded broker, one `choreoscope collect` process (SQLite store by default), an
instrumented producer publishing `order.placed` at R/2 per second and an instrumented consumer
(`traced_consumer`, its own process) answering each with `order.confirmed` — R events/s on the
bus in all, every one with a trace. Beside them, a thread runs the dashboard's queries
(overview, flow search, anomalies, event health) every 2 s against the same store.

Printed at the end: events produced vs stored (must be equal), the collector's peak memory
(VmHWM of its largest process: the worker that `collect` supervises), and the p50/p95/max ingest delay (the record's broker timestamp, set at publish, to
the time the collector built its row, observed_at_ms; both from this machine's clock).

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 2000] [--store URL]
        [--analyze-interval SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PLACED, CONFIRMED = "soak.orders", "soak.confirmations"


def _consumer_main(bootstrap: str, stop: Any, produced: Any, ready: Any) -> None:
    """The answering service: consume orders, publish a confirmation for each."""
    from kafka import KafkaConsumer, KafkaProducer
    from opentelemetry.sdk.trace import TracerProvider

    from choreoscope.instrumentation import instrument_producer, traced_consumer

    provider = TracerProvider()  # spans made and ended, exported nowhere: the bus is measured
    producer = instrument_producer(KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5),
                                   service="confirmation-service", tracer_provider=provider)
    consumer = KafkaConsumer(PLACED, bootstrap_servers=bootstrap, group_id="soak-confirm",
                             auto_offset_reset="earliest", session_timeout_ms=6000,
                             heartbeat_interval_ms=1000, max_poll_records=2000)

    @traced_consumer(service="confirmation-service", group="soak-confirm",
                     tracer_provider=provider)
    def handle(event: Any) -> None:
        producer.publish(CONFIRMED, "order.confirmed", {"order": event.data.get("order")},
                         key=event.subject)

    ready.set()
    n = 0
    idle_since = None
    while True:
        batches = consumer.poll(timeout_ms=200)
        got = 0
        for records in batches.values():
            for record in records:
                handle(record)
                got += 1
        n += got
        produced.value = n
        if stop.is_set():
            if got == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 5:
                    break
            else:
                idle_since = None
    producer.flush(60)
    consumer.close()
    producer.close()


def _rss_peak_kb(pid: int) -> int:
    """The largest peak RSS (VmHWM) among `pid` and its descendants: `choreoscope collect`
    runs the collector in a worker process, which stores through a writer process."""
    peak = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak


def _tree(pid: int) -> list[int]:
    """`pid` and every process under it (from /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _dashboard_queries(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    from choreoscope.collector.query import count_flows_by_status, list_anomalies, search_flows
    from choreoscope.collector.query import dashboard as dq

    store = None
    while not stop.wait(2.0):
        try:
            store = store or dq.open_readonly(url)
            if not dq.has_tables(store):
                continue
            now = int(time.time() * 1000)
            dq.overview(store, now_ms=now)
            search_flows(store, status="in_progress")
            count_flows_by_status(store)
            list_anomalies(store)
            dq.event_health(store, since_ms=now - 600_000)
            counts["ok"] = counts.get("ok", 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and shown, the soak goes on
            counts["failed"] = counts.get("failed", 0) + 1
            counts["last_error"] = str(exc)[:200]  # type: ignore[assignment]


def _stored(url: str) -> tuple[int, list[int]]:
    from sqlalchemy import func, select

    from choreoscope.collector.store import Store
    from choreoscope.collector.store.schema import events

    store = Store(url)
    try:
        with store.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(events)).scalar() or 0
            delays = [int(d) for (d,) in conn.execute(
                select(events.c.observed_at_ms - events.c.broker_ts_ms)
                .where(events.c.broker_ts_ms.is_not(None)))]
        return int(n), delays
    except Exception:  # noqa: BLE001 - tables not there yet
        return 0, []
    finally:
        store.dispose()


def _pct(values: list[int], p: float) -> int:
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=2000, help="events/s on the bus in all")
    ap.add_argument("--store", default=None, help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--analyze-interval", type=float, default=10.0,
                    help="the collector's analysis interval, seconds")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate < 2:
        ap.error(f"expected --minutes > 0 and --rate >= 2, got {args.minutes} and {args.rate}")

    from kafka import KafkaProducer
    from opentelemetry.sdk.trace import TracerProvider

    from choreoscope.collector.broker import EmbeddedBroker
    from choreoscope.instrumentation import instrument_producer

    tmp = tempfile.mkdtemp(prefix="choreoscope-soak-")
    url = args.store or f"sqlite:///{tmp}/soak.db"
    broker = EmbeddedBroker().start()
    bootstrap = broker.bootstrap
    log = open(Path(tmp) / "collector.log", "w")  # noqa: SIM115 - closed at the end
    collector = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
         "--bootstrap", bootstrap, "--topics", r"^soak\..*", "--group", "soak-collector",
         "--otlp-port", "0", "--analyze-interval", f"{args.analyze_interval:g}",
         "--stuck-after", "3600",
         "--kafka-option", "session.timeout.ms=6000",
         "--kafka-option", "heartbeat.interval.ms=1000"],
        stdout=subprocess.DEVNULL, stderr=log)
    ctx = mp.get_context("spawn")
    stop_consumer, ready = ctx.Event(), ctx.Event()
    confirmed = ctx.Value("q", 0)
    consumer = ctx.Process(target=_consumer_main, args=(bootstrap, stop_consumer, confirmed,
                                                        ready), daemon=True)
    consumer.start()
    ready.wait(60)
    producer = instrument_producer(KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5),
                                   service="order-service", tracer_provider=TracerProvider())
    stop_queries = threading.Event()
    query_counts: dict[str, int] = {}
    queries = threading.Thread(target=_dashboard_queries, args=(url, stop_queries, query_counts),
                               daemon=True)
    queries.start()

    # Start the clock once the collector has joined its group and stores what comes.
    producer.publish("soak.warmup", "soak.started", {})
    producer.flush(30)
    deadline = time.monotonic() + 120
    while _stored(url)[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    per_s = args.rate / 2  # each order brings its confirmation
    placed = 0
    start = time.monotonic()
    end = start + args.minutes * 60
    next_report = start + 30
    peak_kb = 0
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * per_s)
            while placed < due:
                producer.publish(PLACED, "order.placed", {"order": placed, "amount": 12.5},
                                 key=f"ord-{placed % 5000}")
                placed += 1
            peak_kb = max(peak_kb, _rss_peak_kb(collector.pid))
            if now >= next_report:
                stored, _ = _stored(url)
                print(f"[{now - start:6.0f}s] placed {placed} confirmed {confirmed.value} "
                      f"stored {stored} collector peak {peak_kb / 1024:.0f} MiB", flush=True)
                next_report += 30
            time.sleep(0.005)
        producer.flush(120)
        elapsed = time.monotonic() - start
        stop_consumer.set()
        consumer.join(600)
        answered = time.monotonic() - start  # the consumer may lag behind and catch up
        produced = 1 + placed + confirmed.value  # with the warm-up event
        deadline = time.monotonic() + 180
        stored, delays = _stored(url)
        while stored < produced and time.monotonic() < deadline:
            time.sleep(1)
            peak_kb = max(peak_kb, _rss_peak_kb(collector.pid))
            stored, delays = _stored(url)
        peak_kb = max(peak_kb, _rss_peak_kb(collector.pid))
    finally:
        stop_queries.set()
        producer.close(10)
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(60)
            except subprocess.TimeoutExpired:
                collector.kill()
        if consumer.is_alive():
            consumer.terminate()
        broker.stop()
        log.close()
    print(f"soak: {args.minutes:g} min at a target of {args.rate} events/s: {placed} placed "
          f"({placed / elapsed:.0f}/s for {elapsed:.0f} s) + {confirmed.value} confirmed "
          f"(all answered after {answered:.0f} s: {produced / answered:.0f} events/s overall)")
    print(f"events produced {produced}, stored {stored}: "
          f"{'EQUAL' if produced == stored else 'MISMATCH'}")
    print(f"collector peak RSS {peak_kb / 1024:.0f} MiB (its largest process)")
    print(f"ingest delay publish->stored: p50 {_pct(delays, 50)} ms, "
          f"p95 {_pct(delays, 95)} ms, max {max(delays, default=0)} ms")
    print(f"dashboard query rounds: {query_counts.get('ok', 0)} ok, "
          f"{query_counts.get('failed', 0)} failed {query_counts.get('last_error', '')}")
    print(f"store {url} (collector log in {tmp})")
    return 0 if produced == stored else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
