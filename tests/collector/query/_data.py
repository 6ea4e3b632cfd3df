"""A small store, filled row by row as ingest, traces, analysis and the outbox monitor write it."""

from __future__ import annotations

import json
from typing import Any

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import (
    anomalies,
    events,
    flows,
    graph_edges,
    outbox_sources,
    spans,
)

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00.000Z
TRACE_1 = "1" * 32
TRACE_3 = "3" * 32


def event(topic: str, offset: int, event_id: str | None, type_: str, source: str, flow: str,
          *, at: int, causation: str | None = None, subject: str | None = None,
          trace: str | None = None, partition: int = 0, problems: list[str] | None = None,
          ) -> dict[str, Any]:
    return {
        "topic": topic, "partition": partition, "offset": offset, "event_id": event_id,
        "type": type_, "source": source, "subject": subject, "correlation_id": flow,
        "causation_id": causation, "flow_id": flow, "schema_version": "1",
        "time": f"t+{at - T0}", "time_ms": at, "sequence": None, "key": subject,
        "trace_id": trace, "span_id": "a" * 16 if trace else None, "broker_ts_ms": at,
        "observed_at_ms": at + 5, "envelope": "binary",
        "problems": json.dumps(problems) if problems else None, "headers": "{}",
        "data": json.dumps({"n": offset}), "data_size": 8, "data_truncated": False,
    }


EVENTS = [
    event("orders", 0, "e1", "order.placed", "orders", "ord-1", at=T0, subject="ord_1",
          trace=TRACE_1),
    # the effect reached the bus before its cause's duplicate; e3 before e2 in broker time
    event("payments", 0, "e2", "payment.succeeded", "payments", "ord-1", at=T0 + 200,
          causation="e1", subject="ord_1", trace=TRACE_1),
    event("payments", 1, "e2", "payment.succeeded", "payments", "ord-1", at=T0 + 300,
          causation="e1", subject="ord_1", trace=TRACE_1),
    event("shipping", 0, "e3", "order.shipped", "shipping", "ord-1", at=T0 + 100,
          causation="e2", subject="ord_1", trace=TRACE_1),
    event("orders", 1, "e4", "order.placed", "orders", "ord-2", at=T0 + 60_000,
          subject="ord_2"),
    event("orders", 2, "e5", "order.placed", "orders", "ord-3", at=T0 + 120_000,
          subject="ord_3", trace=TRACE_3),
    event("payments", 2, "e6", "payment.failed", "payments", "ord-3", at=T0 + 120_500,
          causation="e5", subject="ord_3", trace=TRACE_3, problems=["type_not_past_tense"]),
    # stored by ingest, not yet reconstructed into a flow
    event("orders", 3, "e7", "order.placed", "orders", "ord-4", at=T0 + 180_000,
          subject="ord_4"),
]


def flow(cid: str, status: str, start: int, end: int, count: int, services: list[str],
         types: list[str], traces: list[str], variant: str) -> dict[str, Any]:
    return {
        "correlation_id": cid, "status": status, "started_at_ms": start, "last_seen_at_ms": end,
        "duration_ms": end - start, "event_count": count, "services": json.dumps(services),
        "event_types": json.dumps(types), "trace_ids": json.dumps(traces),
        "anomaly_count": 99,  # stale on purpose: the query layer counts live
        "variant": variant, "trace_status": "available" if traces else "none",
        "updated_at_ms": T0 + 200_000,
    }


FLOWS = [
    flow("ord-1", "completed", T0, T0 + 300, 3, ["orders", "payments", "shipping"],
         ["order.placed", "payment.succeeded", "order.shipped"], [TRACE_1],
         "order.placed > payment.succeeded > order.shipped"),
    flow("ord-2", "stuck", T0 + 60_000, T0 + 60_000, 1, ["orders"], ["order.placed"], [],
         "order.placed"),
    flow("ord-3", "failed", T0 + 120_000, T0 + 120_500, 2, ["orders", "payments"],
         ["order.placed", "payment.failed"], [TRACE_3], "order.placed > payment.failed"),
]


def span(trace: str, span_id: str, name: str, kind: str, service: str, start_us: int,
         *, parent: str | None = None, message_id: str | None = None, group: str | None = None,
         status: str = "unset", error_type: str | None = None) -> dict[str, Any]:
    return {
        "trace_id": trace, "span_id": span_id, "parent_span_id": parent, "name": name,
        "kind": kind, "service": service, "start_us": start_us, "duration_us": 1500,
        "status": status, "status_message": "boom" if status == "error" else None,
        "error_type": error_type, "message_id": message_id, "conversation_id": None,
        "consumer_group": group, "destination": name.split(" ", 1)[1],
        "partition": 0 if kind == "consumer" else None, "offset": 0 if kind == "consumer" else None,
        "out_of_order": False, "attributes": json.dumps({"messaging.system": "kafka"}),
        "links": "[]", "events": "[]", "origin": "otlp", "received_at_ms": T0 + 1000,
    }


SPANS = [
    span(TRACE_1, "a" * 16, "send orders", "producer", "orders", T0 * 1000, message_id="e1"),
    span(TRACE_1, "b" * 16, "process orders", "consumer", "payments", T0 * 1000 + 12_000,
         parent="a" * 16, message_id="e1", group="payments"),
    span(TRACE_3, "c" * 16, "process orders", "consumer", "payments", (T0 + 120_000) * 1000 + 9000,
         message_id="e5", group="payments", status="error", error_type="ValueError"),
    # another flow's span: never part of ord-1
    span("9" * 32, "d" * 16, "process orders", "consumer", "audit", T0 * 1000, message_id="zz",
         group="audit"),
]


def anomaly(i: int, kind: str, subkind: str | None, cid: str, event_id: str | None,
            subject: str | None, service: str | None, group: str | None, detail: str,
            at: int) -> dict[str, Any]:
    return {"key": f"{kind}:{i}", "kind": kind, "subkind": subkind, "correlation_id": cid,
            "event_id": event_id, "subject": subject, "service": service, "group_name": group,
            "detail": detail, "extra": None, "detected_at_ms": at}


ANOMALIES = [
    anomaly(1, "duplicate", "publish", "ord-1", "e2", "ord_1", "payments", None,
            "event e2 published twice (payments/0/0, payments/0/1)", T0 + 1000),
    anomaly(2, "stuck_flow", None, "ord-2", "e4", "ord_2", "orders", None,
            "nothing followed order.placed e4 for 60 s", T0 + 130_000),
    anomaly(3, "failed_handler", None, "ord-3", "e5", "ord_3", "payments", "payments",
            "payments failed handling order.placed e5: ValueError", T0 + 121_000),
    anomaly(4, "stuck_outbox", "dead", "ord-3", "o-1", "ord_3", "orders", None,
            "outbox orders: row o-1 is dead", T0 + 121_000),
]


def edge(source: str, target: str, kind: str, count: int, p50: float | None,
         p95: float | None, anomalies: int = 0) -> dict[str, Any]:
    return {"source": source, "target": target, "kind": kind, "count": count, "p50_ms": p50,
            "p95_ms": p95, "anomaly_count": anomalies}


EDGES = [
    edge("orders", "order.placed", "emits", 3, None, None),
    edge("order.placed", "payments", "consumed_by", 2, 12.0, 40.5, anomalies=1),
    edge("payments", "payment.succeeded", "emits", 1, None, None),
    edge("payments", "payment.failed", "emits", 1, None, None),
    edge("payment.succeeded", "shipping", "consumed_by", 1, 8.0, 8.0),
    edge("shipping", "order.shipped", "emits", 1, None, None),
]

STUCK_ROW = {"id": "o-1", "seq": 7, "aggregatetype": "orders", "aggregateid": "ord_3",
             "type": "order.cancelled", "attempts": 5, "last_error": "broker down",
             "age_s": 95.5, "correlation_id": "ord-3", "trace_id": TRACE_3, "status": "dead",
             "reason": "dead", "service": "orders"}

OUTBOX = [
    {"source": "orders", "table_name": "outbox", "reachable": True, "last_poll_ms": T0 + 125_000,
     "last_ok_ms": T0 + 125_000, "last_error": None, "pending": 4, "dead": 1,
     "oldest_pending_age_s": 12.25, "publish_lag_p95_ms": 35.0,
     "stuck": json.dumps([STUCK_ROW])},
    {"source": "billing", "table_name": "billing.outbox", "reachable": False,
     "last_poll_ms": T0 + 125_000, "last_ok_ms": T0 + 5_000,
     "last_error": "connection refused", "pending": 0, "dead": 0,
     "oldest_pending_age_s": None, "publish_lag_p95_ms": None, "stuck": "[]"},
]


def fill(store: Store) -> Store:
    """Create the schema and insert every row above."""
    store.create()
    with store.engine.begin() as conn:
        for table, rows in ((events, EVENTS), (flows, FLOWS), (spans, SPANS),
                            (anomalies, ANOMALIES), (graph_edges, EDGES),
                            (outbox_sources, OUTBOX)):
            conn.execute(table.insert(), rows)
    return store
