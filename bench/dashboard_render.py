"""Time each dashboard page's full AppTest run on stores of 10,000 and 1,000,000 events.

    .venv/bin/python bench/dashboard_render.py [--sizes 10000,1000000] [--repeat 3]

Builds two SQLite stores in a temporary folder (rows generated in bulk: events, one CONSUMER
span per event, flows, graph edges, anomalies, an outbox source), then runs every page with
`streamlit.testing.v1.AppTest` and prints the median time per page and the ratio of the
largest store to the smallest (median of `--repeat` interleaved rounds after a warm-up
round). Target: every page under 1.5 s at 1M events and at most 3x
its 10k time. Query caches are cleared before each timed run: `st.cache_data` lives on
across AppTest runs in one process, and the warm-up run has just filled it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

import choreoscope.dashboard
from choreoscope.collector.ingest.rows import COLUMNS
from choreoscope.collector.store import Store, schema

PAGES = ("overview", "flow_map", "flows", "out_of_order", "outbox", "variants", "event_health")
APP_DIR = Path(choreoscope.dashboard.__file__).parent
CHAIN = [("order-service", "order.placed"), ("payment-service", "payment.completed"),
         ("inventory-service", "stock.reserved"), ("shipping-service", "order.shipped"),
         ("notification-service", "customer.notified")]
CONSUMER = {"order.placed": "payment-service", "payment.completed": "inventory-service",
            "stock.reserved": "shipping-service", "order.shipped": "notification-service"}


def build(path: Path, n_events: int, now_ms: int) -> None:
    """A store of `n_events` events in flows of up to five, spread over the last 7 days."""
    url = f"sqlite:///{path}"
    store = Store(url).create()
    indexed = [schema.events, schema.spans, schema.flows, schema.anomalies]
    with store.engine.begin() as conn:  # bulk load first, index after: much faster
        for table in indexed:
            for index in table.indexes:
                index.drop(conn)
    rnd = random.Random(7)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    span_ms = 7 * 24 * 3600 * 1000
    events, spans, flows, anomalies = [], [], [], []
    offset = 0
    flow_no = 0
    while offset < n_events:
        flow_no += 1
        cid = f"flow-{flow_no:08d}"
        trace = f"{flow_no:032x}"
        length = min(rnd.choice((5, 5, 5, 4, 3, 2)), n_events - offset)
        t = now_ms - span_ms + (offset * span_ms) // n_events
        cause = None
        types = []
        for i in range(length):
            source, etype = CHAIN[i]
            eid = f"{cid}-{i}"
            at = t + i * 40
            problems = json.dumps(["type_not_past_tense: x"]) if flow_no % 97 == 0 else None
            untraced = flow_no % 50 == 0
            events.append((
                "shop", 0, offset, eid, etype, source, f"ord_{flow_no}", cid, cause, cid, "1",
                None, at, None, None, None if untraced else trace,
                None if untraced else f"{i + 1:016x}", at, at + 5, "binary", problems,
                '{"ce_id": "' + eid + '"}', '{"order_id": "ord_' + str(flow_no) + '"}', 30,
                0, None if untraced else True))
            if etype in CONSUMER:
                spans.append((trace, f"{i + 1:016x}", None, "process shop", "consumer",
                               CONSUMER[etype], (at + 20) * 1000, 15_000, "unset", eid,
                               CONSUMER[etype].split("-")[0], "shop", 0, offset, 0, "otlp",
                               at + 100))
            cause = eid
            types.append(etype)
            offset += 1
        status = "completed" if length == 5 else rnd.choice(("in_progress", "stuck", "failed"))
        flows.append((cid, status, t, t + (length - 1) * 40, (length - 1) * 40, length,
                      json.dumps(sorted({CHAIN[i][0] for i in range(length)})),
                      json.dumps(sorted(types)), json.dumps([trace]), 0, " > ".join(types),
                      "available", now_ms))
        if flow_no % 40 == 0:
            extra = {"order": "processing", "type": "order.placed",
                     "expected": [{"event_id": f"{cid}-0", "type": "order.placed",
                                   "time_ms": t, "broker_ts_ms": t},
                                  {"event_id": f"{cid}-1", "type": "payment.completed",
                                   "time_ms": t + 40, "broker_ts_ms": t + 40}],
                     "observed": [{"event_id": f"{cid}-1", "type": "payment.completed",
                                   "time_ms": t + 40, "broker_ts_ms": t + 40},
                                  {"event_id": f"{cid}-0", "type": "order.placed",
                                   "time_ms": t, "broker_ts_ms": t}]}
            anomalies.append((f"out_of_order:causal:g:{cid}", "out_of_order", "causal", cid,
                              f"{cid}-0", f"ord_{flow_no}", "payment-service", "payment",
                              "processed the effect first", json.dumps(extra), t + 1000))
        if status == "stuck":
            anomalies.append((f"stuck_flow:{cid}", "stuck_flow", None, cid, None, None, None,
                              None, "nothing happened", None, t + 60_000))
    with db:
        # the columns named: a column added to the table later fails here, not silently
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        db.executemany(f"INSERT INTO events ({names}) VALUES ({','.join('?' * len(COLUMNS))})",
                       events)
        db.executemany(
            'INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, service, '
            'start_us, duration_us, status, message_id, consumer_group, destination, '
            '"partition", "offset", out_of_order, origin, received_at_ms) VALUES '
            f"({','.join('?' * 17)})", spans)
        db.executemany(f"INSERT INTO flows VALUES ({','.join('?' * 13)})", flows)
        db.executemany(
            "INSERT INTO anomalies (key, kind, subkind, correlation_id, event_id, subject, "
            "service, group_name, detail, extra, detected_at_ms) VALUES "
            f"({','.join('?' * 11)})", anomalies)
        edges = []
        for i, (source, etype) in enumerate(CHAIN):
            edges.append((source, etype, "emits", n_events // 5, None, None, 0))
            if etype in CONSUMER:
                edges.append((etype, CONSUMER[etype], "consumed_by", n_events // 5, 20.0,
                              35.0, 1 if i == 0 else 0))
        db.executemany("INSERT INTO graph_edges VALUES (?,?,?,?,?,?,?)", edges)
        db.execute("INSERT INTO outbox_sources VALUES ('orders-db', 'outbox', 1, ?, ?, NULL, "
                   "12, 0, 40.0, 230.0, '[]')", (now_ms, now_ms))
    db.close()
    with store.engine.begin() as conn:
        for table in indexed:
            for index in table.indexes:
                index.create(conn)
        conn.exec_driver_sql("ANALYZE")
    store.dispose()


def time_page(page: str) -> float:
    """Seconds of one page's AppTest run, after a first run of the app that pays AppTest's own
    one-off set-up (component discovery) outside the measurement."""
    at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(f"views/{page}.py")
    st.cache_data.clear()  # the page's queries run, not the last run's cached answers
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"{page}: {at.exception[0].message}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="build the stores in DIR and reuse them")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    now_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(args.keep or tmp) / f"store-{n}.db"
            if not path.exists():
                t0 = time.perf_counter()
                build(path, n, now_ms)
                print(f"built {n:,} events in {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr)
        os.environ["CHOREOSCOPE_REFRESH_S"] = "0"
        times: dict[int, dict[str, list[float]]] = {n: {p: [] for p in PAGES} for n in sizes}
        for rep in range(args.repeat + 1):  # sizes interleaved: both see the same noise
            for n in sizes:
                os.environ["CHOREOSCOPE_STORE"] = f"sqlite:///{Path(args.keep or tmp)}/store-{n}.db"
                for p in PAGES:
                    elapsed = time_page(p)
                    if rep:  # the first round warms imports, engines and the OS file cache
                        times[n][p].append(elapsed)
        results = {n: {p: statistics.median(times[n][p]) for p in PAGES} for n in sizes}
    small, large = min(sizes), max(sizes)
    print(f"{'page':<14}" + "".join(f"{n:>12,}" for n in sizes) + f"{'ratio':>9}  verdict")
    ok = True
    for p in PAGES:
        ratio = results[large][p] / results[small][p]
        good = results[large][p] < 1.5 and ratio <= 3.0
        ok &= good
        print(f"{p:<14}" + "".join(f"{results[n][p]:>11.3f}s" for n in sizes)
              + f"{ratio:>8.2f}x  {'ok' if good else 'MISSED'}")
    print("target: < 1.5 s at the largest store and <= 3x the smallest:",
          "met" if ok else "missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
