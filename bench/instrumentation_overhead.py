"""Throughput of instrumented kafka-python against bare kafka-python and OpenTelemetry's own.

In one run, on an embedded broker, with the same payload and a `BatchSpanProcessor` feeding an
exporter that discards:

- producing: bare `KafkaProducer.send`, the same under OpenTelemetry's
  `KafkaInstrumentor` (one `traceparent` header), and ours (`TracedProducer.send`: the full
  CloudEvents envelope, 8 headers for a keyless root event, and a PRODUCER span ended when
  the future completes); each timed as N sends plus the final `flush()`;
- consuming: a bare `for record in consumer` loop calling a trivial handler, the same loop
  under `KafkaInstrumentor` (a span per `__next__`), and ours (the handler decorated with
  `traced_consumer`, called per record); each reading the same N enveloped records.

Variants run interleaved, several rounds, best round kept (the machine is noisy). Prints
messages per wall-clock second and per CPU-second of the process (the fair figure on a shared
machine), the ratios, and where our producer's time per message goes. Because the best rounds
of two variants may come from different moments of the machine, it also prints ours /
OpenTelemetry's per CPU-second within each round (the two measured back to back) and their
median. kafka-python
checksums record batches with CRC32C in pure Python unless the `crc32c` package is installed
(a dependency of choreoscope-instrumentation): the bench says which one it measured.

    .venv/bin/python bench/instrumentation_overhead.py [--messages N] [--rounds R]

`--burst N` instead sends N records (default run: no burst) through a producer traced by
`setup_tracing` into a local OTLP/HTTP endpoint and checks that every span was received or
counted as lost (`dropped_spans()`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from opentelemetry.instrumentation.kafka import KafkaInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from choreoscope.collector.broker import EmbeddedBroker
from choreoscope.instrumentation import wire
from choreoscope.instrumentation._clock import utc_now_rfc3339
from choreoscope.instrumentation._fastspan import SpanStarter
from choreoscope.instrumentation._wakeups import WakeupCoalescer
from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.ids import new_event_id
from choreoscope.instrumentation.producer import _span_attributes, instrument_producer
from choreoscope.instrumentation.traceparent import format_traceparent

VALUE = json.dumps(
    {"order_id": "ord_7821", "total": 129.5, "items": [{"sku": "A1", "qty": 2}]}
).encode()


class DiscardingExporter(SpanExporter):
    """Accepts every batch and keeps nothing but a count: the cost measured is the
    instrumentation's."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


# `--max-queue-size`: the span processor's queue (None: the SDK's default, 2048 spans).
max_queue_size: int | None = None


def provider(exporter: DiscardingExporter | None = None) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(
        BatchSpanProcessor(exporter or DiscardingExporter(), max_queue_size=max_queue_size)
    )
    return tp


# -- producing ---------------------------------------------------------------------------


# Best (lowest) CPU microseconds per message of the sending thread alone, per variant: the
# rest of the process's CPU time is kafka-python's network thread and the span processor's.
main_thread_us: dict[str, float] = {}
# Our producer's network-thread wake-ups in the last round: (written, skipped), see _wakeups.
wakeups: dict[str, tuple[int, int]] = {}


def produce_rate(bootstrap: str, topic: str, n: int, variant: str) -> tuple[float, float]:
    """(messages per wall-clock second, per CPU second of this process) for `n` sends + flush.

    Says so when the span processor dropped spans (its queue full): such a round did less work.
    """
    exporter = DiscardingExporter()
    tp = provider(exporter)
    if variant == "otel":
        KafkaInstrumentor().instrument(tracer_provider=tp)
    try:
        raw = KafkaProducer(bootstrap_servers=bootstrap)
        producer: Any = raw
        if variant == "ours":
            producer = instrument_producer(raw, service="bench", tracer_provider=tp)
        send = producer.send
        for _ in range(500):  # metadata and connections warmed up
            send(topic, VALUE)
        producer.flush()
        start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        for _ in range(n):
            send(topic, VALUE)
        producer.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        own = (time.thread_time() - own) / n * 1e6
        main_thread_us[variant] = min(main_thread_us.get(variant, own), own)
        coalescer = getattr(getattr(raw._sender, "wakeup", None), "__self__", None)
        if isinstance(coalescer, WakeupCoalescer):
            wakeups[variant] = (coalescer.written, coalescer.skipped)
        raw.close()
    finally:
        if variant == "otel":
            KafkaInstrumentor().uninstrument()
        tp.shutdown()
    if variant != "bare" and exporter.exported < n + 500:
        print(f"  ({variant}: {n + 500 - exporter.exported:,} of {n + 500:,} spans dropped)")
    return n / elapsed, n / cpu


# -- consuming ---------------------------------------------------------------------------


def fill(bootstrap: str, topic: str, n: int) -> None:
    """`n` enveloped records on partition 0 of `topic`."""
    tp = provider()
    producer = instrument_producer(
        KafkaProducer(bootstrap_servers=bootstrap), service="bench", tracer_provider=tp
    )
    for _ in range(n):
        producer.send(topic, VALUE, partition=0)
    producer.flush()
    producer.close()
    tp.shutdown()


def consume_rate(bootstrap: str, topic: str, n: int, variant: str) -> tuple[float, float]:
    """(records per wall-clock second, per CPU second) handled reading partition 0 from the start."""
    tp = provider()
    handled = [0]

    def handler(item: Any) -> None:
        handled[0] += 1

    handle: Callable[[Any], Any] = handler
    if variant == "otel":
        KafkaInstrumentor().instrument(tracer_provider=tp)
    elif variant == "ours":
        from choreoscope.instrumentation.consumer import traced_consumer

        handle = traced_consumer(service="bench", group="bench", tracer_provider=tp)(handler)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        part = TopicPartition(topic, 0)
        consumer.assign([part])
        consumer.seek_to_beginning(part)
        consumer.poll(timeout_ms=0)  # connect before the clock starts
        start, cpu = time.perf_counter(), time.process_time()
        for record in consumer:
            handle(record)
            if handled[0] >= n:
                break
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        consumer.close()
    finally:
        if variant == "otel":
            KafkaInstrumentor().uninstrument()
        tp.shutdown()
    return n / elapsed, n / cpu


# -- where our producer's time goes ------------------------------------------------------


def breakdown(number: int) -> dict[str, float]:
    """Microseconds per message of each part of our send path, measured alone."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    tp = provider()
    tracer = tp.get_tracer("bench")
    base = {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "bench",
    }
    event = Event(
        id=new_event_id(),
        type="bench",
        source="bench",
        schema_version="1",
        time=utc_now_rfc3339(),
    )
    event.correlation_id = event.id
    attrs = _span_attributes(base, event, None)
    span = tracer.start_span("x")
    sc = span.get_span_context()
    tparent = format_traceparent(sc.trace_id, sc.span_id, sc.trace_flags)
    headers = wire.encode_headers(event, tparent)

    def per(stmt: Callable[[], Any], n: int = number) -> float:
        """CPU microseconds per call, best of 3 (CPU time: other processes do not count)."""
        timer = timeit.Timer(stmt, timer=time.process_time)
        return min(timer.repeat(number=n, repeat=3)) / n * 1e6

    start_span = SpanStarter(tracer)

    def span_cost() -> None:
        start_span("send bench", None, SpanKind.PRODUCER, attrs).end()

    def public_span_cost() -> None:
        tracer.start_span("send bench", None, SpanKind.PRODUCER, attrs).end()

    def envelope_cost() -> None:
        e = Event(id=new_event_id(), type="bench", source="bench", schema_version="1")
        e.time = utc_now_rfc3339()
        e.correlation_id = e.id
        _span_attributes(base, e, None)
        wire.encode_headers(e, format_traceparent(sc.trace_id, sc.span_id, sc.trace_flags))

    def builder() -> Any:
        return DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 10**9)

    b1, b2 = builder(), builder()
    count = [0]

    def append_with() -> None:
        count[0] += 1
        b1.append(count[0], 1_700_000_000_000, None, VALUE, headers)

    def append_without() -> None:
        count[0] += 1
        b2.append(count[0], 1_700_000_000_000, None, VALUE, [])

    result = {
        "span (start+end, our attributes)": per(span_cost),
        "  the same through the SDK's attribute checks": per(public_span_cost),
        "envelope (id, time, Event, attributes, headers)": per(envelope_cost),
        "  of which new_event_id": per(new_event_id),
        "  of which encode_headers": per(lambda: wire.encode_headers(event, tparent)),
        f"kafka-python record encoding, {len(headers)} headers": per(append_with, 20_000),
        "kafka-python record encoding, no headers": per(append_without, 20_000),
    }
    tp.shutdown()
    return result


# -- span accounting under a burst ------------------------------------------------------


def burst(bootstrap: str, n: int) -> None:
    """N sends with setup_tracing's provider: spans received + spans counted lost == N."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from choreoscope.instrumentation import dropped_spans, setup_tracing

    received = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = ExportTraceServiceRequest.FromString(body)
            received[0] += sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tp = setup_tracing(
        "bench", endpoint=f"http://127.0.0.1:{server.server_address[1]}", set_global=False
    )
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    producer = instrument_producer(raw, service="bench", tracer_provider=tp)
    start = time.perf_counter()
    for _ in range(n):
        producer.send(f"bench.burst.{int(start)}", VALUE)
    producer.flush()
    elapsed = time.perf_counter() - start
    tp.shutdown()
    raw.close()
    server.shutdown()
    lost = dropped_spans()
    print(
        f"burst of {n:,} sends in {elapsed:.1f} s: {received[0]:,} spans received, "
        f"{lost:,} counted lost; accounted for: {received[0] + lost == n}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per measurement")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds, best kept")
    parser.add_argument("--no-consume", action="store_true", help="producer side only")
    parser.add_argument("--burst", type=int, default=0, help="only the span-accounting burst")
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        help="span processor queue (default: the SDK's, 2048); a larger one keeps every span",
    )
    args = parser.parse_args()
    global max_queue_size
    max_queue_size = args.max_queue_size
    n = args.messages
    if args.burst:
        with EmbeddedBroker() as broker:
            burst(broker.bootstrap, args.burst)
        return
    variants = ("bare", "otel", "ours")
    best: dict[str, dict[str, list[float]]] = {
        side: {v: [0.0, 0.0] for v in variants} for side in ("produce", "consume")
    }
    # Messages per CPU-second of every round, per side and variant, in round order.
    per_round: dict[str, dict[str, list[float]]] = {
        side: {v: [] for v in variants} for side in ("produce", "consume")
    }

    def keep(side: str, variant: str, r: int, rates: tuple[float, float]) -> None:
        slot = best[side][variant]
        slot[0], slot[1] = max(slot[0], rates[0]), max(slot[1], rates[1])
        per_round[side][variant].append(rates[1])
        print(
            f"  {side} round {r + 1} {variant:5s} {rates[0]:9,.0f} msg/s wall "
            f"{rates[1]:9,.0f} msg/CPU-s",
            flush=True,
        )

    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        stamp = int(time.time())
        for r in range(args.rounds):
            for v in variants:
                keep("produce", v, r, produce_rate(bootstrap, f"bench.p.{stamp}.{r}.{v}", n, v))
        if not args.no_consume:
            topic = f"bench.consume.{stamp}"
            fill(bootstrap, topic, n)
            for r in range(args.rounds):
                for v in variants:
                    keep("consume", v, r, consume_rate(bootstrap, topic, n, v))

    from kafka.record import util as record_util

    crc = "C (crc32c package)" if record_util.crc32c_c is not None else "pure Python"
    print(f"\n{n:,} messages per measurement, best of {args.rounds} interleaved rounds")
    queue = "the SDK's default" if max_queue_size is None else f"{max_queue_size:,} spans"
    print(f"span processor queue: {queue}")
    print(f"kafka-python CRC32C: {crc}")
    print("wall: messages per second; cpu: messages per CPU-second of the process (all its")
    print("threads; robust to other processes on a shared machine, so the one to compare)")
    print(
        f"{'':14s} {'bare':>10s} {'otel':>10s} {'ours':>10s} {'otel/bare':>10s} "
        f"{'ours/bare':>10s} {'ours/otel':>10s}"
    )
    sides = ["produce"] + ([] if args.no_consume else ["consume"])
    for side in sides:
        for i, unit in enumerate(("wall", "cpu")):
            b, o, u = (best[side][v][i] for v in variants)
            print(
                f"{side + ' ' + unit:14s} {b:10,.0f} {o:10,.0f} {u:10,.0f} "
                f"{o / b:10.2f} {u / b:10.2f} {u / o:10.2f}"
            )
    print("ours / otel by CPU within each round (measured back to back), and the median:")
    for side in sides:
        ratios = [
            u / o for u, o in zip(per_round[side]["ours"], per_round[side]["otel"], strict=True)
        ]
        print(
            f"  {side:8s} {' '.join(f'{x:.2f}' for x in ratios)}   "
            f"median {statistics.median(ratios):.2f}"
        )
    print("\nour producer, CPU microseconds per message:")
    print(
        f"  {'bare send, whole path (from the run above)':50s} {1e6 / best['produce']['bare'][1]:7.2f}"
    )
    print(
        f"  {'otel send, whole path (from the run above)':50s} {1e6 / best['produce']['otel'][1]:7.2f}"
    )
    print(
        f"  {'our send, whole path (from the run above)':50s} {1e6 / best['produce']['ours'][1]:7.2f}"
    )
    for v, label in (("bare", "bare"), ("otel", "otel"), ("ours", "our")):
        print(f"  {label + ' send, sending thread only':50s} {main_thread_us[v]:7.2f}")
    if "ours" in wakeups:
        written, skipped = wakeups["ours"]
        print(
            f"  network-thread wake-ups written by our producer (last round): {written:,}, "
            f"skipped as already pending: {skipped:,}"
        )
    print("  each part timed alone:")
    for part, us in breakdown(20_000).items():
        print(f"  {part:50s} {us:7.2f}")


if __name__ == "__main__":
    main()
