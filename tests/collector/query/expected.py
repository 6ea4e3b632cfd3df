"""The exact JSON the query layer gives for the rows of `_data` (shared by the CLI tests)."""

from __future__ import annotations

from tests.collector.query._data import TRACE_1, TRACE_3

FLOW_1 = {
    "correlation_id": "ord-1", "status": "completed",
    "started_at": "2025-11-24T16:00:00.000Z", "last_seen_at": "2025-11-24T16:00:00.300Z",
    "duration_ms": 300, "event_count": 3, "services": ["orders", "payments", "shipping"],
    "event_types": ["order.placed", "payment.succeeded", "order.shipped"],
    "trace_ids": [TRACE_1], "anomaly_count": 1,
    "variant": "order.placed > payment.succeeded > order.shipped", "trace_status": "available",
}
FLOW_2 = {
    "correlation_id": "ord-2", "status": "stuck",
    "started_at": "2025-11-24T16:01:00.000Z", "last_seen_at": "2025-11-24T16:01:00.000Z",
    "duration_ms": 0, "event_count": 1, "services": ["orders"], "event_types": ["order.placed"],
    "trace_ids": [], "anomaly_count": 1, "variant": "order.placed", "trace_status": "none",
}
FLOW_3 = {
    "correlation_id": "ord-3", "status": "failed",
    "started_at": "2025-11-24T16:02:00.000Z", "last_seen_at": "2025-11-24T16:02:00.500Z",
    "duration_ms": 500, "event_count": 2, "services": ["orders", "payments"],
    "event_types": ["order.placed", "payment.failed"], "trace_ids": [TRACE_3],
    "anomaly_count": 2, "variant": "order.placed > payment.failed", "trace_status": "available",
}
FLOWS = [FLOW_3, FLOW_2, FLOW_1]  # most recently active first

# ord-1's records: causal order puts e3 (bus time +100) after its cause e2 (+200)
FLOW_1_RECORDS = [("e1", "orders", 0, False), ("e2", "payments", 0, False),
                  ("e3", "shipping", 0, False), ("e2", "payments", 1, True)]

FIRST_EVENT = {
    "id": "e1", "type": "order.placed", "source": "orders", "subject": "ord_1",
    "causation_id": None, "topic": "orders", "partition": 0, "offset": 0, "time": "t+0",
    "observed_at": "2025-11-24T16:00:00.005Z", "correlation_id": "ord-1", "sequence": None,
    "key": "ord_1", "trace_id": TRACE_1, "span_id": "aaaaaaaaaaaaaaaa",
    "broker_time": "2025-11-24T16:00:00.000Z", "envelope": "binary", "problems": [],
    "duplicate": False, "data": {"n": 0},
}

CONSUMER_SPAN_1 = {
    "trace_id": TRACE_1, "span_id": "b" * 16, "parent_span_id": "a" * 16,
    "name": "process orders", "kind": "consumer", "service": "payments",
    "start": "2025-11-24T16:00:00.012000Z", "start_us": 1_764_000_000_012_000,
    "duration_ms": 1.5, "status": "unset", "status_message": None, "error_type": None,
    "message_id": "e1", "group": "payments", "destination": "orders", "partition": 0,
    "offset": 0, "out_of_order": False, "attributes": {"messaging.system": "kafka"},
    "origin": "otlp",
}

ANOMALY_DUPLICATE = {
    "kind": "duplicate", "subkind": "publish", "correlation_id": "ord-1", "event_id": "e2",
    "subject": "ord_1", "service": "payments", "group": None,
    "detail": "event e2 published twice (payments/0/0, payments/0/1)",
    "detected_at": "2025-11-24T16:00:01.000Z", "extra": {},
}
ANOMALY_FAILED = {
    "kind": "failed_handler", "subkind": None, "correlation_id": "ord-3", "event_id": "e5",
    "subject": "ord_3", "service": "payments", "group": "payments",
    "detail": "payments failed handling order.placed e5: ValueError",
    "detected_at": "2025-11-24T16:02:01.000Z", "extra": {},
}
ANOMALY_OUTBOX = {
    "kind": "stuck_outbox", "subkind": "dead", "correlation_id": "ord-3", "event_id": "o-1",
    "subject": "ord_3", "service": "orders", "group": None,
    "detail": "outbox orders: row o-1 is dead",
    "detected_at": "2025-11-24T16:02:01.000Z", "extra": {},
}
ANOMALY_STUCK = {
    "kind": "stuck_flow", "subkind": None, "correlation_id": "ord-2", "event_id": "e4",
    "subject": "ord_2", "service": "orders", "group": None,
    "detail": "nothing followed order.placed e4 for 60 s",
    "detected_at": "2025-11-24T16:02:10.000Z", "extra": {},
}
# detection order: detected_at, then insertion id
ANOMALIES = [ANOMALY_DUPLICATE, ANOMALY_FAILED, ANOMALY_OUTBOX, ANOMALY_STUCK]

OUTBOX = [
    {"source": "billing", "table": "billing.outbox", "pending": 0, "dead": 0,
     "oldest_pending_age_s": None, "publish_lag_p95_ms": None, "stuck": [],
     "reachable": False, "last_ok_at": "2025-11-24T16:00:05.000Z",
     "last_poll_at": "2025-11-24T16:02:05.000Z", "last_error": "connection refused",
     "stale": False},
    {"source": "orders", "table": "outbox", "pending": 4, "dead": 1,
     "oldest_pending_age_s": 12.25, "publish_lag_p95_ms": 35.0,
     "stuck": [{"id": "o-1", "aggregatetype": "orders", "aggregateid": "ord_3",
                "type": "order.cancelled", "attempts": 5, "last_error": "broker down",
                "age_s": 95.5, "correlation_id": "ord-3", "trace_id": TRACE_3,
                "status": "dead", "seq": 7, "reason": "dead", "service": "orders"}],
     "reachable": True, "last_ok_at": "2025-11-24T16:02:05.000Z",
     "last_poll_at": "2025-11-24T16:02:05.000Z", "last_error": None, "stale": False},
]
# As read a year later (the CLI reads the clock): no collector polls them any more.
OUTBOX_LATER = [dict(source, stale=True) for source in OUTBOX]

GRAPH = {
    "nodes": [
        {"id": "order.placed", "kind": "event_type"},
        {"id": "order.shipped", "kind": "event_type"},
        {"id": "payment.failed", "kind": "event_type"},
        {"id": "payment.succeeded", "kind": "event_type"},
        {"id": "orders", "kind": "service"},
        {"id": "payments", "kind": "service"},
        {"id": "shipping", "kind": "service"},
    ],
    "edges": [
        {"source": "order.placed", "target": "payments", "kind": "consumed_by", "count": 2,
         "p50_ms": 12.0, "p95_ms": 40.5, "anomaly_count": 1},
        {"source": "orders", "target": "order.placed", "kind": "emits", "count": 3,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
        {"source": "payment.succeeded", "target": "shipping", "kind": "consumed_by", "count": 1,
         "p50_ms": 8.0, "p95_ms": 8.0, "anomaly_count": 0},
        {"source": "payments", "target": "payment.failed", "kind": "emits", "count": 1,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
        {"source": "payments", "target": "payment.succeeded", "kind": "emits", "count": 1,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
        {"source": "shipping", "target": "order.shipped", "kind": "emits", "count": 1,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
    ],
}

DOT = """\
digraph choreography {
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica", fontsize=10];
  "type:order.placed" [label="order.placed", shape=ellipse];
  "type:order.shipped" [label="order.shipped", shape=ellipse];
  "type:payment.failed" [label="payment.failed", shape=ellipse];
  "type:payment.succeeded" [label="payment.succeeded", shape=ellipse];
  "svc:orders" [label="orders", shape=box];
  "svc:payments" [label="payments", shape=box];
  "svc:shipping" [label="shipping", shape=box];
  "type:order.placed" -> "svc:payments" [label="2, p95 40 ms", tooltip="1 anomalies", \
color="red", fontcolor="red", penwidth=2];
  "svc:orders" -> "type:order.placed" [label="3"];
  "type:payment.succeeded" -> "svc:shipping" [label="1, p95 8.0 ms"];
  "svc:payments" -> "type:payment.failed" [label="1"];
  "svc:payments" -> "type:payment.succeeded" [label="1"];
  "svc:shipping" -> "type:order.shipped" [label="1"];
}
"""
