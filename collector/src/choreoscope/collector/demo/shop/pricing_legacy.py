"""pricing-legacy: an old service nobody instrumented. It writes a hand-written JSON envelope
with plain kafka-python: no CloudEvents headers, no trace context, no schema version.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
import uuid

from kafka import KafkaProducer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--chaos", default="mild", choices=["none", "mild", "heavy"])
    p.add_argument("--otlp-endpoint", default=None, help="ignored: this service is not traced")
    p.add_argument("--interval", type=float, default=3.0)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    rng = random.Random(42)
    # With heavy chaos the type is not even in the past tense.
    event_type = "UpdatePrice" if args.chaos == "heavy" else "PriceChanged"
    while not stop.wait(args.interval):
        sku = rng.choice(["mug-blue", "tee-black", "poster-a2", "socks-3p"])
        envelope = {
            "eventId": str(uuid.uuid4()),
            "eventType": event_type,
            "timestamp": int(time.time() * 1000),
            "source": "pricing-legacy",
            "data": {"sku": sku, "price": round(rng.uniform(5, 30), 2)},
        }
        producer.send("pricing", json.dumps(envelope).encode(), key=sku.encode())
    producer.flush(5)
    producer.close(5)


if __name__ == "__main__":
    main()
