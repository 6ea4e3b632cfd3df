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


def flow_row(cid: str, status: str, started_ms: int, last_ms: int, types: list[str],
             services: set[str], traces: list[str]) -> dict[str, Any]:
    """A `flows` row of events of `types` (its variant, in that order)."""
    return {"correlation_id": cid, "status": status, "started_at_ms": started_ms,
            "last_seen_at_ms": last_ms, "duration_ms": last_ms - started_ms,
            "event_count": len(types), "services": json.dumps(sorted(services)),
            "event_types": json.dumps(sorted(types)), "trace_ids": json.dumps(traces),
            "anomaly_count": 0, "variant": " > ".join(types),
            "trace_status": "available" if traces else "none",
            "updated_at_ms": T0 + 3_600_000}


def many_flows(prefix: str, n: int, types: list[str], status: str = "completed"
               ) -> list[dict[str, Any]]:
    """`n` flows `{prefix}-0`, `{prefix}-1`, ... of one variant, a second apart after the
    others."""
    at = T0 + 3_600_000
    return [flow_row(f"{prefix}-{i}", status, at + i * 1000, at + i * 1000 + 10, types,
                     {"bulk-service"}, []) for i in range(n)]


def many_arrivals(group: str, n: int) -> list[dict[str, Any]]:
    """`n` out-of-order arrivals at consumer group `group`, of events `{group}-0`, ..."""
    return [{"key": f"out_of_order:time:{group}:{i}", "kind": "out_of_order",
             "subkind": "time", "correlation_id": None, "event_id": f"{group}-{i}",
             "subject": "sku_9", "service": None, "group_name": group,
             "detail": f"group {group} processed {group}-{i} late", "extra": None,
             "detected_at_ms": T0 + 3_600_000 + i * 1000} for i in range(n)]


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
        fl.append(flow_row(cid, status, at, last, types,
                           {"order-service", "payment-service"}
                           | ({"shipping-service"} if status == "completed" else set()), [t]))
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
        fl.append(flow_row(eid, "in_progress", T0 + 400_000, T0 + 400_000, ["PriceUpdate"],
                           {"pricing-legacy"}, []))

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
               "detail": "payment.completed e1-paid published twice",
               "extra": json.dumps({"type": "payment.completed"}),
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
    return add(Store(url).create(), rows())


# Bus text that is also URL or Markdown syntax: a correlation id, an event type, a subject.
URL_ID = "ord 7/x&y#z?q=1%20"
MD_ID = "cid`with**md**`"
EVIL_TYPE = "evil [click me](http://evil.example/x) **bold**"


def weird_rows() -> dict[Any, list[dict[str, Any]]]:
    """Two flows of such text (URL_ID, and MD_ID with an EVIL_TYPE event, subject `x`), an
    out-of-order arrival of that event, and an outbox source with a stuck row of URL_ID."""
    at = T0 + 700_000
    ev = [_event("weird", 0, "w1", "order.placed", "weird-svc", URL_ID, None, at),
          _event("weird", 1, "w2", "order.shipped", "weird-svc", URL_ID, "w1", at + 100),
          _event("weird", 2, "w3", EVIL_TYPE, "weird-svc", MD_ID, None, at + 200,
                 subject="`x`")]
    fl = [flow_row(URL_ID, "completed", at, at + 100, ["order.placed", "order.shipped"],
                   {"weird-svc"}, []),
          flow_row(MD_ID, "in_progress", at + 200, at + 200, [EVIL_TYPE], {"weird-svc"}, [])]
    an = [{"key": "out_of_order:time:g:w3", "kind": "out_of_order", "subkind": "time",
           "correlation_id": MD_ID, "event_id": "w3", "subject": "`x`", "service": None,
           "group_name": "g*1*", "detail": f"group g*1* processed {EVIL_TYPE} w3 late",
           "extra": json.dumps({"type": EVIL_TYPE}), "detected_at_ms": at + 1000}]
    stuck = [{"id": "w-row-1", "aggregatetype": "orders", "aggregateid": "ord_7",
              "type": "order.placed", "attempts": 1, "last_error": None, "age_s": 900.0,
              "correlation_id": URL_ID, "trace_id": None, "status": "pending"}]
    outbox = [{"source": "weird-db", "table_name": "outbox", "reachable": True,
               "last_poll_ms": at, "last_ok_ms": at, "last_error": None, "pending": 1,
               "dead": 0, "oldest_pending_age_s": 900.0, "publish_lag_p95_ms": None,
               "stuck": json.dumps(stuck)}]
    return {s.events: ev, s.flows: fl, s.anomalies: an, s.outbox_sources: outbox}


def add(store: Store, table_rows: dict[Any, list[dict[str, Any]]]) -> Store:
    """Write more rows (`weird_rows()`, ...) into a filled store."""
    with store.engine.begin() as conn:
        for table, batch in table_rows.items():
            store.insert_ignore(conn, table, batch)
    return store
