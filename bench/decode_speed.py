"""Micro-benchmark of `decode_record`: microseconds per record, measured with timeit.

A well-formed binary record as the instrumentation writes it (ce_* headers with sequence,
correlation and causation ids, traceparent and tracestate: 12 headers) and a small JSON value;
plus a structured, a hand-written-envelope and a bad record for comparison. Prints us/record
for each and the binary figure against the 10 us budget of the collector's ingest.

    .venv/bin/python bench/decode_speed.py [--number N]
"""

from __future__ import annotations

import argparse
import json
import time
import timeit

from choreoscope.instrumentation.decoder import decode_record

VALUE = json.dumps(
    {"order_id": "ord_7821", "total": 129.5, "items": [{"sku": "A1", "qty": 2}]}
).encode()
BINARY = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69"),
    ("ce_type", b"order.placed"),
    ("ce_source", b"orders"),
    ("ce_time", b"2026-11-26T05:35:14.123Z"),
    ("ce_subject", b"ord_7821"),
    ("ce_schemaversion", b"1"),
    ("ce_correlationid", b"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a00"),
    ("ce_causationid", b"019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a01"),
    ("ce_sequence", b"3"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("tracestate", b"vendor=opaque"),
]
STRUCTURED = json.dumps(
    {
        "specversion": "1.0",
        "id": "019ac1e4-5f3a-7c21-9b2e-6f1d3c4b5a69",
        "type": "order.placed",
        "source": "orders",
        "time": "2026-11-26T05:35:14.123Z",
        "subject": "ord_7821",
        "data": json.loads(VALUE),
    }
).encode()
HAND_WRITTEN = json.dumps(
    {
        "eventId": "e-1",
        "eventType": "OrderPlaced",
        "version": 1,
        "timestamp": 1795671417330,
        "source": "orders",
        "data": json.loads(VALUE),
    }
).encode()
CASES = {
    "binary, 12 headers": (BINARY, VALUE),
    "binary, 9 headers": (BINARY[:9], VALUE),
    "structured": ([("content-type", b"application/cloudevents+json")], STRUCTURED),
    "hand-written envelope": (None, HAND_WRITTEN),
    "bad: non-UTF-8 header, bad traceparent": (
        [*BINARY[:9], ("ce_subject", b"\xff\xfe"), ("traceparent", b"00-XYZ")],
        b"not json",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    results = {}
    for name, (headers, value) in CASES.items():

        def decode(headers=headers, value=value):  # type: ignore[no-untyped-def]
            return decode_record(headers, value, topic="orders", partition=0, offset=42, key=b"k")

        best = min(timeit.repeat(decode, number=args.number, repeat=5, timer=time.process_time))
        results[name] = best / args.number * 1e6
        print(f"{name:42s} {results[name]:6.2f} us/record")
    baseline = min(
        timeit.repeat(
            lambda: json.loads(VALUE), number=args.number, repeat=5, timer=time.process_time
        )
    )
    print(f"{'(json.loads of the value alone)':42s} {baseline / args.number * 1e6:6.2f} us")
    print(f"binary, 9 headers vs 10 us budget: {results['binary, 9 headers'] / 10:.2f}x")


if __name__ == "__main__":
    main()
