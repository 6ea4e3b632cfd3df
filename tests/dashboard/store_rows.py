"""A small store written row by row per schema.py, with known flows, anomalies and outbox.

Times are fixed (T0 = 2026-01-01 00:00:00 UTC) so pages show predictable numbers; the pages'
"last hour" charts simply show nothing for them.
"""

from __future__ import annotations

import json
from typing import Any

from choreoscope.collector.store import Store
from choreoscope.collector.store import schema as s

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
SECRET_URL = "postgresql://billing:hunter2@db.internal/billing"

FLOWS = {
    "ord-1": "completed",
    "ord-2": "stuck",
    "ord-3": "failed",
}


def _trace(n: int) -> str:
    return f"{n:032x}"


def _event(topic: str, offset: int, eid: str, etype: str, source: str, cid: str | None,
           cause: str | None, at: int, *, subject: str = "ord", trace: str | None = None,
           problems: list[str] | None = None, version: str = "1",
           data: dict[str, Any] | None = None, partition: int = 0) -> dict[str, Any]:
    return {
        "topic": topic, "partition": partition, "offset": offset, "event_id": eid,
        "type": etype, "source": source, "subject": subject, "correlation_id": cid,
        "causation_id": cause, "flow_id": cid or eid, "schema_version": version,
        "time": None, "time_ms": at, "sequence": None, "key": subject, "trace_id": trace,
        "span_id": "00000000000000aa" if trace else None, "broker_ts_ms": at,
        "observed_at_ms": at + 5, "envelope": "binary",
        "problems": json.dumps(problems) if problems else None,
        "headers": json.dumps({"ce_id": eid, "ce_type": etype, "ce_source": source}),
        "data": json.dumps(data if data is not None else {"order_id": subject, "card": "[REDACTED]"}),
        "data_size": 40, "data_truncated": False,
    }


def _span(trace: str, sid: str, parent: str | None, name: str, kind: str, service: str,
          start_ms: int, dur_ms: int, *, status: str = "unset", message_id: str | None = None,
          group: str | None = None, error: str | None = None) -> dict[str, Any]:
    return {
        "trace_id": trace, "span_id": sid, "parent_span_id": parent, "name": name, "kind": kind,
        "service": service, "start_us": start_ms * 1000, "duration_us": dur_ms * 1000,
        "status": status, "status_message": None, "error_type": error, "message_id": message_id,
        "conversation_id": None, "consumer_group": group, "destination": name.split(" ")[-1],
        "partition": 0, "offset": 0, "out_of_order": False, "attributes": "{}", "links": "[]",
        "events": "[]", "origin": "otlp", "received_at_ms": start_ms + 100,
    }


def rows() -> dict[Any, list[dict[str, Any]]]:
    """Every table's rows."""
    ev, sp, fl, an = [], [], [], []
    off = {"orders": 0, "payments": 0, "shipments": 0}

    def put(topic: str, *args: Any, **kw: Any) -> dict[str, Any]:
        e = _event(topic, off[topic], *args, **kw)
        off[topic] += 1
        ev.append(e)
        return e

    for n, (cid, status) in enumerate(FLOWS.items(), start=1):
        t, at = _trace(n), T0 + n * 60_000
        put("orders", f"e{n}-placed", "order.placed", "order-service", cid, None, at,
            subject=f"ord_{n}", trace=t)
        sp.append(_span(t, f"{n:015x}1", None, "send orders", "producer", "order-service",
                        at, 3, message_id=f"e{n}-placed"))
        sp.append(_span(t, f"{n:015x}2", f"{n:015x}1", "process orders", "consumer",
                        "payment-service", at + 20, 30, message_id=f"e{n}-placed",
                        group="payments", status="error" if status == "failed" else "unset",
                        error="ValueError" if status == "failed" else None))
        types = ["order.placed"]
        if status != "failed":
            put("payments", f"e{n}-paid", "payment.completed", "payment-service", cid,
                f"e{n}-placed", at + 60, subject=f"ord_{n}", trace=t)
            types.append("payment.completed")
        if status == "completed":
            put("shipments", f"e{n}-shipped", "order.shipped", "shipping-service", cid,
                f"e{n}-paid", at + 200, subject=f"ord_{n}", trace=t)
            types.append("order.shipped")
        last = at + (200 if status == "completed" else 60)
        fl.append({"correlation_id": cid, "status": status, "started_at_ms": at,
                   "last_seen_at_ms": last, "duration_ms": last - at,
                   "event_count": len(types),
                   "services": json.dumps(sorted({"order-service", "payment-service"}
                                                 | ({"shipping-service"}
                                                    if status == "completed" else set()))),
                   "event_types": json.dumps(sorted(types)), "trace_ids": json.dumps([t]),
                   "anomaly_count": 0, "variant": " > ".join(types), "trace_status": "available",
                   "updated_at_ms": T0 + 3_600_000})
    # a duplicate publish of ord-1's payment, and events from an uninstrumented producer
    dup = dict(ev[1], offset=off["payments"])
    off["payments"] += 1
    ev.append(dup)
    put("orders", "legacy-1", "PriceUpdate", "pricing-legacy", None, None, T0 + 400_000,
        subject="sku_9", problems=["type_not_past_tense: PriceUpdate", "missing_time"],
        version="2")
    put("orders", "legacy-2", "PriceUpdate", "pricing-legacy", None, None, T0 + 401_000,
        subject="sku_9", problems=["type_not_past_tense: PriceUpdate"], version="2")
    for eid in ("legacy-1", "legacy-2"):
        fl.append({"correlation_id": eid, "status": "in_progress",
                   "started_at_ms": T0 + 400_000, "last_seen_at_ms": T0 + 400_000,
                   "duration_ms": 0, "event_count": 1, "services": '["pricing-legacy"]',
                   "event_types": '["PriceUpdate"]', "trace_ids": "[]", "anomaly_count": 0,
                   "variant": "PriceUpdate", "trace_status": "none",
                   "updated_at_ms": T0 + 3_600_000})

    def rec(eid: str, etype: str, at: int, processed_ms: int) -> dict[str, Any]:
        return {"event_id": eid, "type": etype, "time_ms": at, "broker_ts_ms": at,
                "topic": "orders", "partition": 0, "offset": 0,
                "processed_at_us": processed_ms * 1000}

    cause = rec("e2-placed", "order.placed", T0 + 120_000, T0 + 120_900)
    effect = rec("e2-paid", "payment.completed", T0 + 120_060, T0 + 120_500)
    an.append({"key": "out_of_order:causal:audit:e2-placed:e2-paid", "kind": "out_of_order",
               "subkind": "causal", "correlation_id": "ord-2", "event_id": "e2-placed",
               "subject": "ord_2", "service": "audit-service", "group_name": "audit",
               "detail": "group audit processed payment.completed e2-paid before its cause "
                         "order.placed e2-placed",
               "extra": json.dumps({"order": "processing", "type": "order.placed",
                                    "expected": [cause, effect], "observed": [effect, cause]}),
               "detected_at_ms": T0 + 600_000})
    an.append({"key": "duplicate:publish:e1-paid", "kind": "duplicate", "subkind": "publish",
               "correlation_id": "ord-1", "event_id": "e1-paid", "subject": "ord_1",
               "service": "payment-service", "group_name": None,
               "detail": "payment.completed e1-paid published twice", "extra": None,
               "detected_at_ms": T0 + 600_000})
    an.append({"key": "stuck_flow:ord-2", "kind": "stuck_flow", "subkind": None,
               "correlation_id": "ord-2", "event_id": "e2-paid", "subject": "ord_2",
               "service": None, "group_name": None,
               "detail": "nothing happened after payment.completed for 60 s", "extra": None,
               "detected_at_ms": T0 + 600_000})
    graph = [
        {"source": "order-service", "target": "order.placed", "kind": "emits", "count": 3,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
        {"source": "order.placed", "target": "payment-service", "kind": "consumed_by",
         "count": 3, "p50_ms": 20.0, "p95_ms": 20.0, "anomaly_count": 1},
        {"source": "payment-service", "target": "payment.completed", "kind": "emits",
         "count": 2, "p50_ms": None, "p95_ms": None, "anomaly_count": 1},
        {"source": "payment.completed", "target": "shipping-service", "kind": "consumed_by",
         "count": 1, "p50_ms": 140.0, "p95_ms": 140.0, "anomaly_count": 0},
    ]
    stuck = [{"id": "0190a0a0-0000-7000-8000-000000000001", "aggregatetype": "orders",
              "aggregateid": "ord_7", "type": "order.placed", "attempts": 5,
              "last_error": f"could not connect to {SECRET_URL}", "age_s": 754.0,
              "correlation_id": "ord-2", "trace_id": _trace(2), "status": "dead"}]
    outbox = [
        {"source": "orders-db", "table_name": "outbox", "reachable": True,
         "last_poll_ms": T0 + 600_000, "last_ok_ms": T0 + 600_000, "last_error": None,
         "pending": 7, "dead": 1, "oldest_pending_age_s": 754.0, "publish_lag_p95_ms": 230.0,
         "stuck": json.dumps(stuck)},
        {"source": "billing-db", "table_name": "outbox", "reachable": False,
         "last_poll_ms": T0 + 600_000, "last_ok_ms": T0 + 300_000,
         "last_error": f"connection to {SECRET_URL} refused", "pending": 2, "dead": 0,
         "oldest_pending_age_s": 30.0, "publish_lag_p95_ms": None, "stuck": "[]"},
    ]
    lag = [{"group_name": "payments", "topic": "orders", "partition": 0, "committed": 10,
            "end_offset": 14, "lag": 4, "measured_at_ms": T0 + 600_000}]
    return {s.events: ev, s.spans: sp, s.flows: fl, s.anomalies: an, s.graph_edges: graph,
            s.outbox_sources: outbox, s.consumer_lag: lag}


def fill(url: str) -> Store:
    """Create the store at `url` and write every row."""
    store = Store(url).create()
    with store.engine.begin() as conn:
        for table, table_rows in rows().items():
            store.insert_ignore(conn, table, table_rows)
    return store
