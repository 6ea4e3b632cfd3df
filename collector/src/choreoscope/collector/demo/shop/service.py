"""What every shop service shares: command-line options, tracing, clients and the poll loop.

This is ordinary service code: a kafka-python producer wrapped once with
`instrument_producer`, handlers decorated with `traced_consumer`, a consumer loop.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from choreoscope.instrumentation import Event, TracedProducer, instrument_producer, setup_tracing
from choreoscope.instrumentation.wire import encode_headers

from .chaos import Chaos

log = logging.getLogger("choreoscope.demo")


def options(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap host:port")
    p.add_argument("--otlp-endpoint", default=None, help="OTLP/HTTP base URL for spans")
    p.add_argument("--chaos", default="mild", choices=["none", "mild", "heavy"])
    return p


class Service:
    """One running service: its name, producer, chaos settings and a stop flag."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s")
        self.name = name
        self.args = args
        self.chaos = Chaos(args.chaos)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.tracer_provider = setup_tracing(name, endpoint=args.otlp_endpoint)
        self.producer: TracedProducer = instrument_producer(
            KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, retries=5), service=name
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    def consume(
        self,
        topics: list[str],
        handler: Callable[[Any], Any],
        *,
        types: frozenset[str],
        group: str | None = None,
    ) -> threading.Thread:
        """Run a consumer loop for `topics` in a thread, calling `handler` on every record of
        one of `types` (read from its `ce_type` header). Records of other types are passed
        over before the handler, as a service routing on the header does: a traced handler
        that returned early would still show the service as processing them (in the graph,
        and in causal order checks)."""

        def loop() -> None:
            consumer = KafkaConsumer(
                *topics,
                bootstrap_servers=self.args.bootstrap,
                group_id=group or self.name,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            )
            try:
                while not self.stopping.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for record in records:
                            if event_type(record) not in types:
                                continue
                            try:
                                handler(record)
                            except Exception as exc:  # noqa: BLE001 - logged, the loop goes on
                                log.warning("handler failed on %s@%s: %s", record.topic, record.offset, exc)
            finally:
                consumer.close()

        return self.spawn(loop, f"{self.name}-{'-'.join(topics)}")

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a worker thread that runs until `stopping` is set; `wait()` joins it."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def resend(self, topic: str, event: Event) -> None:
        """Send `event` again with its original envelope (same ce_id): what a blind retry does."""
        self.producer.send(
            topic,
            value=event.data,
            key=event.subject.encode() if event.subject else None,
            headers=encode_headers(event),
        )

    def wait(self) -> None:
        """Block until SIGTERM/SIGINT; stop the consumer loops, then flush records and spans."""
        while not self.stopping.wait(0.5):
            pass
        for thread in self.threads:
            thread.join(10)
        self.producer.flush(10)
        self.producer.close(5)
        self.tracer_provider.shutdown()


def event_type(record: Any) -> str | None:
    """The `ce_type` header of a kafka-python record, None when it has none."""
    for name, value in record.headers or ():
        if name == "ce_type" and value is not None:
            return bytes(value).decode("utf-8", "replace")
    return None
