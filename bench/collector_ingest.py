"""Collector ingest throughput against the raw poll throughput of the Kafka clients.

In one run, over one topic of N events (default 200,000) carrying the full envelope (ten ce_*
headers, traceparent, a JSON payload with a field to redact):

1. raw poll throughput of kafka-python (what the services use; with the C CRC32C of the crc32c
   package, which choreoscope-instrumentation installs, and in a child process without it, as
   a bare `pip install kafka-python` runs) and of confluent-kafka;
2. the collector's full ingest (consume, decode, problems, redaction, rows, one transaction
   per batch, synchronous offset commit) into SQLite and PostgreSQL;
3. a per-record cost breakdown of that ingest (decode / rows+redaction / store), measured in
   process on records already consumed, so the decoder's share shows separately;
4. then bench/reconstruct_scaling.py, when it exists.

Rates are counted from the first batch received to the last record (steady state, the group
join and first fetch excluded), the same way for every client.

    .venv/bin/python bench/collector_ingest.py [--events 200000] [--bootstrap HOST:PORT]
        [--postgres URL | --no-postgres] [--no-reconstruct] [--reconstruct-sizes 100000,1000000]

Target (issue 3): SQLite ingest >= 2x kafka-python raw poll (judged against the C CRC32C one).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from choreoscope.collector.ingest import BusIngest, Redactor, build_batch
from choreoscope.collector.ingest.batch import store_tuples
from choreoscope.collector.ingest.rows import COLUMNS, event_values
from choreoscope.collector.ingest.share import DecodeShare
from choreoscope.collector.store import Store
from choreoscope.instrumentation.decoder import decode_with_headers
from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.ids import new_event_id
from choreoscope.instrumentation.wire import encode_headers

BATCH = 5000
DEFAULT_PG = os.environ.get("CHOREOSCOPE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TYPES = ("order.placed", "payment.captured", "inventory.reserved", "order.shipped")


def produce(bootstrap: str, topic: str, n: int) -> float:
    """Produce n full-envelope events; returns seconds taken."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "none"})
    started = time.perf_counter()
    previous = None
    for i in range(n):
        flow = i // 4
        event = Event(id=new_event_id(), type=TYPES[i % 4], source="shop",
                      subject=f"ord_{flow}", correlation_id=f"corr-{flow:08d}",
                      causation_id=previous if i % 4 else None, schema_version="1",
                      time="2026-01-02T03:04:05.678Z", sequence=i % 4)
        previous = event.id
        traceparent = f"00-{flow:032x}-{i + 1:016x}-01"
        value = json.dumps({"order_id": f"ord_{flow}", "total": 42.5, "currency": "EUR",
                            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
                            "customer": {"id": flow, "email": "someone@example.com"}},
                           separators=(",", ":")).encode()
        while True:
            try:
                p.produce(topic, value=value, key=event.subject.encode(),
                          headers=encode_headers(event, traceparent))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(120)
    return time.perf_counter() - started


def _rate(label: str, poll: Callable[[], int], n: int, timeout_s: float = 600.0) -> float:
    """Records/s from the first non-empty batch to the n-th record."""
    deadline = time.monotonic() + timeout_s
    started = time.perf_counter()
    seen = 0
    first = 0
    t0 = 0.0
    while seen < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: only {seen} of {n} records within {timeout_s:.0f}s")
        got = poll()
        if got and not first:
            first, t0 = got, time.perf_counter()
        seen += got
    elapsed = time.perf_counter() - t0
    if seen == first or elapsed <= 0:  # everything came in one batch: time it from the start
        first, elapsed = 0, time.perf_counter() - started
    rate = (seen - first) / elapsed
    print(f"  {label:<34} {rate:>10,.0f} records/s  ({seen - first:,} in {elapsed:.2f}s)",
          flush=True)
    return rate


def raw_kafka_python(bootstrap: str, topic: str, n: int,
                     label: str = "kafka-python raw poll") -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                      auto_offset_reset="earliest", enable_auto_commit=False)

    def poll() -> int:
        return sum(len(records) for records in c.poll(timeout_ms=500, max_records=BATCH).values())

    try:
        return _rate(label, poll, n)
    finally:
        c.close()


def raw_kafka_python_pure_crc(bootstrap: str, topic: str, n: int) -> float:
    """kafka-python's raw poll as `pip install kafka-python` alone gives it: without the
    crc32c package (which choreoscope-instrumentation depends on), every record batch is
    checksummed in pure Python. Measured in a child process that cannot import crc32c."""
    code = ("import sys; sys.modules['crc32c'] = None; "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import collector_ingest as b; from kafka.record import util; "
            "assert util.crc32c_c is None; "
            f"print(b.raw_kafka_python({bootstrap!r}, {topic!r}, {n}, "
            "'kafka-python raw poll, pure-Python CRC'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=900).stdout.splitlines()
    print("\n".join(out[:-1]), flush=True)
    return float(out[-1])


def raw_confluent(bootstrap: str, topic: str, n: int, keep: list[Any]) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])

    def poll() -> int:
        messages = c.consume(num_messages=BATCH, timeout=0.5)
        if len(keep) < 50_000:
            keep.extend(messages)
        return sum(1 for m in messages if m.error() is None)

    try:
        return _rate("confluent-kafka raw consume", poll, n)
    finally:
        c.close()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collector(bootstrap: str, topic: str, n: int, url: str, label: str,
              shared: bool = True) -> float:
    """The collector's ingest rate; `shared=False`: the writer process decodes nothing."""
    store = Store(url).create()
    ingest = BusIngest(store, bootstrap=bootstrap, topics=f"^{topic}$",
                       group=f"bench-collector-{uuid.uuid4().hex[:8]}", batch_size=BATCH)
    if not shared:
        ingest.share = DecodeShare(share=0.0, high=0.0)
    try:
        def poll() -> int:  # records stored and committed by this step
            before = ingest.records
            ingest.step()
            return ingest.records - before

        with ingest:
            cpu0 = time.process_time()
            rate = _rate(label, poll, n)
            cpu = time.process_time() - cpu0
            child = getattr(ingest.writer, "_process", None)
            if child is not None and child.pid is not None:
                share = ingest.share.share if ingest.share else 0.0
                print(f"    CPU per record: collector process {cpu / n * 1e6:.1f} us, writer "
                      f"process {_cpu_s(child.pid) / n * 1e6:.1f} us (its whole life); "
                      f"the writer decoded {share:.0%} of the last batch", flush=True)
        if ingest.inserted != n:
            raise RuntimeError(f"{label}: expected {n} rows stored, got {ingest.inserted}")
        return rate
    finally:
        store.dispose()


def breakdown(messages: list[Any], url: str) -> dict[str, float]:
    """Microseconds per record of each ingest step, on records already in memory (with the
    cyclic GC paused, as build_batch and the writer process do)."""
    gc.disable()
    try:
        return _breakdown(messages, url)
    finally:
        gc.enable()


def _breakdown(messages: list[Any], url: str) -> dict[str, float]:
    messages = [m for m in messages if m.error() is None]
    redactor = Redactor()
    n = len(messages)
    t0 = time.perf_counter()
    decoded = [decode_with_headers(m.headers(), m.value(), topic=m.topic(),
                                   partition=m.partition(), offset=m.offset(), key=m.key(),
                                   timestamp_ms=m.timestamp()[1])
               for m in messages]
    t1 = time.perf_counter()
    rows = [event_values(e, redactor, 0, m.headers(), None, m.value(), text)
            for (e, text), m in zip(decoded, messages, strict=True)]
    t2 = time.perf_counter()
    store = Store(url).create()
    for i in range(0, n, BATCH):
        store_tuples(store, COLUMNS, rows[i:i + BATCH])
    t3 = time.perf_counter()
    store.dispose()
    t4 = time.perf_counter()
    for i in range(0, n, BATCH):
        build_batch(messages[i:i + BATCH], redactor, 0)
    t5 = time.perf_counter()
    per = {"decode": (t1 - t0), "rows + redaction": (t2 - t1), "store (SQLite)": (t3 - t2),
           "build_batch (decode + rows)": (t5 - t4)}
    return {k: v / n * 1e6 for k, v in per.items()}


@contextlib.contextmanager
def _fresh_schema(url: str) -> Iterator[str]:
    """The PostgreSQL database emptied of the collector's tables (a fresh store per round)."""
    store = Store(url)
    from choreoscope.collector.store.schema import metadata

    metadata.drop_all(store.engine)
    store.dispose()
    yield url


def _pg_database(admin_url: str) -> tuple[str, Callable[[], None]] | None:
    try:
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'create database "{name}"')
    except Exception as exc:  # noqa: BLE001
        print(f"  PostgreSQL unavailable ({type(exc).__name__}); skipped", flush=True)
        return None

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", help="use this broker instead of an embedded one")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL of a PostgreSQL server")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-reconstruct", action="store_true")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved measurement rounds; the best of each is kept")
    parser.add_argument("--reconstruct-sizes", default=None,
                        help="passed to bench/reconstruct_scaling.py --sizes")
    args = parser.parse_args(argv)
    n = args.events

    broker = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from choreoscope.collector.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    results: dict[str, Any] = {"events": n}
    try:
        topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
        print(f"collector ingest benchmark: {n:,} events on {topic} at {bootstrap}", flush=True)
        took = produce(bootstrap, topic, n)
        print(f"  produced in {took:.2f}s ({n / took:,.0f}/s, confluent-kafka)", flush=True)
        kept: list[Any] = []
        pg = None if args.no_postgres else _pg_database(args.postgres)
        best: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="choreoscope-bench-") as tmp:
            try:
                # Interleaved rounds, best of each: the machine's load changes under a run.
                for round_ in range(1, args.rounds + 1):
                    print(f"round {round_}/{args.rounds}", flush=True)
                    measured = {
                        "kafka_python": raw_kafka_python(bootstrap, topic, n),
                        "kafka_python_pure_crc": raw_kafka_python_pure_crc(bootstrap, topic, n),
                        "confluent": raw_confluent(bootstrap, topic, n, kept),
                        "sqlite": collector(bootstrap, topic, n,
                                            f"sqlite:///{tmp}/ingest{round_}.db",
                                            "collector ingest -> SQLite"),
                        "sqlite_unshared": collector(
                            bootstrap, topic, n, f"sqlite:///{tmp}/unshared{round_}.db",
                            "  same, writer decoding nothing", shared=False),
                    }
                    if pg is not None:
                        with _fresh_schema(pg[0]) as pg_url:
                            measured["postgres"] = collector(bootstrap, topic, n, pg_url,
                                                             "collector ingest -> PostgreSQL")
                    for name, rate in measured.items():
                        best[name] = max(best.get(name, 0.0), rate)
            finally:
                if pg is not None:
                    pg[1]()
            parts = breakdown(kept, f"sqlite:///{tmp}/breakdown.db")
        results.update(best)
    finally:
        if broker is not None:
            broker.stop()

    kp = results["kafka_python"]
    print(f"\nratios (same run, best of {args.rounds} interleaved rounds):")
    print(f"  confluent-kafka raw / kafka-python raw  {results['confluent'] / kp:6.2f}x")
    print(f"  collector SQLite / kafka-python raw     {results['sqlite'] / kp:6.2f}x"
          f"   (target >= 2x: {'met' if results['sqlite'] >= 2 * kp else 'NOT met'})")
    if "postgres" in results:
        print(f"  collector PostgreSQL / kafka-python raw {results['postgres'] / kp:6.2f}x")
    pure = results["kafka_python_pure_crc"]
    print(f"  kafka-python raw, C / pure-Python CRC32C {kp / pure:6.2f}x")
    print(f"  collector SQLite / kafka-python raw with pure-Python CRC32C (no crc32c package) "
          f"{results['sqlite'] / pure:6.2f}x")
    print(f"  collector SQLite / confluent-kafka raw  {results['sqlite'] / results['confluent']:6.2f}x")
    print(f"  decoding shared / writer decoding nothing {results['sqlite'] / results['sqlite_unshared']:5.2f}x")
    print(f"\nper-record cost, {len(kept):,} records in memory (microseconds):")
    for name, us in parts.items():
        print(f"  {name:<30} {us:7.2f}")
    results["breakdown_us"] = parts
    # Rows of one SQLite store are written by one connection at a time: its insert alone,
    # with nothing decoded, bounds what any ingest into that store can reach.
    ceiling = 1e6 / parts["store (SQLite)"]
    results["sqlite_insert_ceiling"] = ceiling
    print(f"  ceiling: the SQLite insert alone stores at most {ceiling:,.0f} records/s here, "
          f"{ceiling / kp:.2f}x kafka-python raw")

    scaling = Path(__file__).with_name("reconstruct_scaling.py")
    if not args.no_reconstruct and scaling.exists():
        print(f"\nrunning {scaling.name}", flush=True)
        cmd = [sys.executable, str(scaling)]
        if args.reconstruct_sizes:
            cmd += ["--sizes", args.reconstruct_sizes]
        subprocess.run(cmd, check=False)
    return results


if __name__ == "__main__":
    main()
