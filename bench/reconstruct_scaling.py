"""Reconstruction + detection scaling: analyze() on 100,000 and 1,000,000 stored events.

Generates realistic five-hop flows (order.placed -> ... -> customer.notified, each event with
its PRODUCER span and a CONSUMER span, plus a sprinkling of duplicates, failures, stuck flows
and envelope problems) straight into SQLite with bulk inserts, then times one analyze() pass
per size in a fresh child process and prints the times (wall and CPU: the machine may be
shared), their ratios and each pass's peak RSS.

    .venv/bin/python bench/reconstruct_scaling.py [--sizes 100000,1000000] [--dir DIR]

Targets (issue 3): the 1M pass takes at most 12x the 100k pass; peak RSS under 2 GiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

CHAIN = (
    ("order.placed", "orders", "orders", "payments"),
    ("payment.authorized", "payments", "payments", "inventory"),
    ("inventory.reserved", "inventory", "inventory", "shipping"),
    ("shipment.scheduled", "shipping", "shipping", "notifications"),
    ("customer.notified", "notifications", "notifications", "crm"),
)
T0 = 1_700_000_000_000
PARTITIONS = 6

EVENT_COLS = ("topic", "partition", "offset", "event_id", "type", "source", "subject",
              "correlation_id", "causation_id", "flow_id", "schema_version", "time", "time_ms",
              "sequence", "key", "trace_id", "span_id", "broker_ts_ms", "observed_at_ms",
              "envelope", "problems", "headers", "data", "data_size", "data_truncated")
SPAN_COLS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "service", "start_us",
             "duration_us", "status", "status_message", "error_type", "message_id",
             "conversation_id", "consumer_group", "destination", "partition", "offset",
             "out_of_order", "attributes", "links", "events", "origin", "received_at_ms")


def _hex(text: str, n: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=n // 2).hexdigest()


def generate(n_events: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """Batches of (event tuples, span tuples) for `n_events` events in five-hop flows."""
    offsets: dict[tuple[str, int], int] = {}
    n_flows = n_events // len(CHAIN)
    batch_e: list[tuple] = []
    batch_s: list[tuple] = []
    for i in range(n_flows):
        flow = f"{i:08d}-0000-7000-8000-{i:012d}"
        trace = _hex(flow, 32)
        ts = T0 + i * 3
        hops = 3 if i % 500 == 7 else len(CHAIN)  # a few flows stop early: stuck
        cause = None
        parent = None
        for h, (etype, topic, src, group) in enumerate(CHAIN[:hops]):
            part = i % PARTITIONS
            off = offsets.get((topic, part), 0)
            eid = f"{i:08d}-{h:04d}-7000-8000-{i:012d}"
            pspan = _hex("p" + eid, 16)
            problems = '["type_not_past_tense: x"]' if i % 1000 == 3 and h == 0 else None
            copies = 2 if i % 1000 == 5 and h == 1 else 1  # a duplicate publish
            for _ in range(copies):
                off = offsets.get((topic, part), 0)
                offsets[(topic, part)] = off + 1
                batch_e.append((topic, part, off, eid, etype, src, f"ord_{i}", flow, cause, flow,
                                "1", None, ts, 1, f"ord_{i}", trace, pspan, ts, ts + 2,
                                "binary", problems, "{}", '{"amount": 42}', 14, 0))
            batch_s.append((trace, pspan, parent, f"send {topic}", "producer", src,
                            ts * 1000 - 300, 300, "ok", None, None, eid, flow, None, topic,
                            None, None, 0, "{}", "[]", "[]", "otlp", ts + 5))
            cspan = _hex("c" + eid, 16)
            failed = i % 1000 == 9 and h == 2
            batch_s.append((trace, cspan, pspan, f"process {topic}", "consumer", group,
                            ts * 1000 + 2000, 1500, "error" if failed else "ok",
                            "boom" if failed else None, "ValueError" if failed else None,
                            eid, flow, group, topic, part, off, 0, "{}", "[]", "[]", "otlp",
                            ts + 5))
            cause, parent = eid, cspan
            ts += 4
        if len(batch_e) >= 50_000:
            yield batch_e, batch_s
            batch_e, batch_s = [], []
    if batch_e:
        yield batch_e, batch_s


def build(path: str, n_events: int) -> int:
    """Create the store at `path` and bulk-insert the synthetic traffic; returns events stored."""
    from choreoscope.collector.store import Store

    Store(f"sqlite:///{path}").create().dispose()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    ev_sql = (f"INSERT INTO events ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in EVENT_COLS)})"
              f" VALUES ({', '.join('?' * len(EVENT_COLS))})")
    sp_sql = (f"INSERT INTO spans ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in SPAN_COLS)})"
              f" VALUES ({', '.join('?' * len(SPAN_COLS))})")
    total = 0
    for evs, sps in generate(n_events):
        db.executemany(ev_sql, evs)
        db.executemany(sp_sql, sps)
        total += len(evs)
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return total


def run_once(path: str) -> dict[str, object]:
    """One analyze() pass on the store at `path` (in this process)."""
    from choreoscope.collector.analyze import AnalysisOptions, analyze
    from choreoscope.collector.store import Store

    store = Store(f"sqlite:///{path}")
    started, cpu = time.perf_counter(), time.process_time()
    result = analyze(store, AnalysisOptions(), now_ms=T0 + 10**9)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "flows": result.flows, "statuses": result.statuses,
            "anomalies": result.anomalies_found}


def measure(path: str, repeat: int = 1) -> dict[str, object]:
    """Run `run_once` in a fresh interpreter so its peak RSS is analyze()'s alone; with
    `repeat`, keep the fastest of several first passes (the machine may be shared)."""
    best: dict[str, object] | None = None
    for _ in range(repeat):
        with sqlite3.connect(path) as db:  # every pass measured is a first pass
            for table in ("flows", "anomalies", "graph_edges"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM meta WHERE key = 'analysis.state'")
        out = subprocess.run([sys.executable, __file__, "--analyze", path], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        if best is None:
            best = r
        else:
            for k in ("seconds", "cpu_seconds"):
                best[k] = min(best[k], r[k])  # type: ignore[type-var]
            best["peak_rss_mib"] = max(best["peak_rss_mib"], r["peak_rss_mib"])  # type: ignore[type-var]
    assert best is not None
    return best


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated event counts (default 100000,1000000)")
    parser.add_argument("--dir", default=None, help="where to put the SQLite stores")
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes per size; the fastest counts (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the stores, and reuse stores already in --dir")
    parser.add_argument("--analyze", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.analyze:
        print(json.dumps(run_once(args.analyze)))
        return {}
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.dir or tempfile.mkdtemp(prefix="cs-bench-")
    results: dict[int, dict[str, object]] = {}
    for n in sizes:
        path = os.path.join(workdir, f"reconstruct-{n}.db")
        if args.keep and os.path.exists(path):
            with sqlite3.connect(path) as db:
                stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
        else:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
            t = time.perf_counter()
            stored = build(path, n)
            print(f"{stored:>9} events stored in {time.perf_counter() - t:6.1f}s", flush=True)
        results[n] = measure(path, args.repeat)
        r = results[n]
        print(f"{stored:>9} events: analyze {r['seconds']:7.2f}s wall "
              f"{r['cpu_seconds']:7.2f}s CPU  peak RSS "
              f"{r['peak_rss_mib']:7.1f} MiB  flows {r['flows']}  {r['statuses']}", flush=True)
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
    summary: dict[str, object] = {"results": results}
    if len(sizes) >= 2:
        small, large = results[sizes[0]], results[sizes[-1]]
        ratio = float(large["seconds"]) / max(float(small["seconds"]), 1e-9)  # type: ignore[arg-type]
        cpu_ratio = (float(large["cpu_seconds"])  # type: ignore[arg-type]
                     / max(float(small["cpu_seconds"]), 1e-9))  # type: ignore[arg-type]
        scale = sizes[-1] / sizes[0]
        summary["ratio"], summary["cpu_ratio"] = ratio, cpu_ratio
        print(f"ratio {sizes[-1]}/{sizes[0]}: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU for "
              f"{scale:.0f}x the events (target <= {1.2 * scale:.0f}x); peak RSS "
              f"{large['peak_rss_mib']} MiB (target < 2048)")
    return summary


if __name__ == "__main__":
    main()
