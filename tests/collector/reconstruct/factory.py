"""Store rows built by hand, as ingest and the trace readers write them, with predictable ids.

`ev(...)` gives an `events` row, `producer(...)`/`consumer(...)` give `spans` rows, `put(...)`
inserts them; `clean_flow(i)` is one realistic five-hop flow with its spans, and
`CHAIN` its event types (the last one is terminal).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events, outbox_sources, spans, trace_fetches

T0 = 1_700_000_000_000  # ms; every test clock starts here

# (event type, topic, producing service, consuming service/group)
CHAIN = (
    ("order.placed", "orders", "orders", "payments"),
    ("payment.authorized", "payments", "payments", "inventory"),
    ("inventory.reserved", "inventory", "inventory", "shipping"),
    ("shipment.scheduled", "shipping", "shipping", "notifications"),
    ("customer.notified", "notifications", "notifications", "crm"),
)


def trace_of(flow: str) -> str:
    """The trace id of a flow (32 hex, derived from its name)."""
    return hashlib.md5(flow.encode()).hexdigest()


def span_of(name: str, kind: str = "p") -> str:
    """A span id (16 hex) derived from a name."""
    return hashlib.md5(f"{kind}:{name}".encode()).hexdigest()[:16]


def ev(event_id: str | None, type_: str | None, *, flow: str, topic: str = "orders",
       partition: int = 0, offset: int = 0, source: str | None = "orders",
       subject: str | None = None, cause: str | None = None, ts: int = T0,
       time_ms: int | None = None, sequence: int | None = None, traced: bool = True,
       observed: int | None = None, problems: list[str] | None = None,
       correlation: bool = True, sampled: bool = True) -> dict[str, Any]:
    """An `events` row; its traceparent points at the producer span `span_of(event_id)`,
    its sampled flag set unless `sampled` is False."""
    t = ts if time_ms is None else time_ms
    return {
        "topic": topic, "partition": partition, "offset": offset,
        "event_id": event_id, "type": type_, "source": source, "subject": subject,
        "correlation_id": flow if correlation else None, "causation_id": cause,
        "flow_id": flow, "schema_version": "1",
        "time": _rfc3339(t), "time_ms": t, "sequence": sequence, "key": subject,
        "trace_id": trace_of(flow) if traced else None,
        "span_id": span_of(event_id or f"{topic}{offset}") if traced else None,
        "broker_ts_ms": ts, "observed_at_ms": ts + 1 if observed is None else observed,
        "envelope": "binary", "problems": json.dumps(problems) if problems else None,
        "headers": "{}", "data": "{}", "data_size": 2, "data_truncated": False,
        "trace_sampled": sampled if traced else None,
    }


def _rfc3339(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def producer(event: Mapping[str, Any], *, parent: str | None = None,
             service: str | None = None) -> dict[str, Any]:
    """The PRODUCER span of an event (the span its traceparent names)."""
    return _span(event, span_id=event["span_id"], parent=parent, kind="producer",
                 service=service or event["source"], start_us=event["broker_ts_ms"] * 1000 - 500,
                 group=None)


def consumer(event: Mapping[str, Any], group: str, *, start_ms: int, status: str = "ok",
             error_type: str | None = None, service: str | None = None,
             span_id: str | None = None, with_offset: bool = True) -> dict[str, Any]:
    """A CONSUMER span of `group` processing `event`, child of its producer span."""
    return _span(event, span_id=span_id or span_of(f"{event['event_id']}{group}", "c"),
                 parent=event["span_id"], kind="consumer", service=service or group,
                 start_us=start_ms * 1000, group=group, status=status, error_type=error_type,
                 with_offset=with_offset)


def _span(event: Mapping[str, Any], *, span_id: str, parent: str | None, kind: str,
          service: str | None, start_us: int, group: str | None, status: str = "ok",
          error_type: str | None = None, with_offset: bool = True) -> dict[str, Any]:
    return {
        "trace_id": event["trace_id"] or trace_of(event["flow_id"]), "span_id": span_id,
        "parent_span_id": parent, "name": f"{'send' if kind == 'producer' else 'process'} "
                                          f"{event['topic']}",
        "kind": kind, "service": service, "start_us": start_us, "duration_us": 2000,
        "status": status, "status_message": "boom" if status == "error" else None,
        "error_type": error_type, "message_id": event["event_id"],
        "conversation_id": event["correlation_id"], "consumer_group": group,
        "destination": event["topic"],
        "partition": event["partition"] if with_offset and kind == "consumer" else None,
        "offset": event["offset"] if with_offset and kind == "consumer" else None,
        "out_of_order": False, "attributes": "{}", "links": "[]", "events": "[]",
        "origin": "otlp", "received_at_ms": start_us // 1000 + 10,
    }


def clean_flow(i: int, *, start: int | None = None, hops: int = 5,
               offsets: dict[tuple[str, int], int] | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flow `f{i}`: `hops` events along CHAIN, each produced then processed 5 ms later."""
    flow = f"f{i:07d}"
    ts = T0 + i * 10 if start is None else start
    offsets = {} if offsets is None else offsets
    rows: list[dict[str, Any]] = []
    sps: list[dict[str, Any]] = []
    cause = None
    parent = None
    for h, (etype, topic, src, group) in enumerate(CHAIN[:hops]):
        part = i % 3
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        eid = f"e{i:07d}-{h}"
        e = ev(eid, etype, flow=flow, topic=topic, partition=part, offset=off, source=src,
               subject=f"ord_{i}", cause=cause, ts=ts, sequence=1)
        rows.append(e)
        sps.append(producer(e, parent=parent))
        c = consumer(e, group, start_ms=ts + 2)
        sps.append(c)
        cause, parent = eid, c["span_id"]
        ts += 5
    return rows, sps


def put(store: Store, events_rows: Iterable[Mapping[str, Any]] = (),
        span_rows: Iterable[Mapping[str, Any]] = (),
        fetches: Iterable[Mapping[str, Any]] = (),
        outbox: Iterable[Mapping[str, Any]] = ()) -> None:
    """Insert rows into the store (duplicates by key are ignored)."""
    with store.engine.begin() as conn:
        for table, rows in ((events, events_rows), (spans, span_rows),
                            (trace_fetches, fetches), (outbox_sources, outbox)):
            rows = list(rows)
            if rows:
                store.insert_ignore(conn, table, rows)


def fetch(trace_id: str, status: str, *, at: int = T0) -> dict[str, Any]:
    """A `trace_fetches` row."""
    return {"trace_id": trace_id, "first_seen_ms": at, "last_event_ms": at,
            "next_fetch_ms": at + 5000, "last_fetch_ms": at + 5000, "attempts": 1,
            "status": status, "span_count": 0, "last_error": None}


def dead_outbox(correlation_id: str, *, name: str = "orders-db") -> dict[str, Any]:
    """An `outbox_sources` row with one dead row of flow `correlation_id`."""
    stuck = [{"id": "r1", "aggregatetype": "orders", "aggregateid": "ord_1",
              "type": "order.placed", "attempts": 5, "last_error": "broker down", "age_s": 90.0,
              "correlation_id": correlation_id, "trace_id": None, "status": "dead"}]
    return {"source": name, "table_name": "outbox", "reachable": True, "last_poll_ms": T0,
            "last_ok_ms": T0, "last_error": None, "pending": 0, "dead": 1,
            "oldest_pending_age_s": None, "publish_lag_p95_ms": None,
            "stuck": json.dumps(stuck)}


def new_store(tmp_path: Any, name: str = "store.db") -> Store:
    return Store(f"sqlite:///{tmp_path / name}").create()


def load_flows(store: Store) -> dict[str, tuple[Any, Any]]:
    """Every flow of the store as (Flow, Dag), read with the reconstruction's own loaders."""
    from choreoscope.collector.reconstruct.flows import causal_dag, group_flows
    from choreoscope.collector.reconstruct.load import events_by_flow, raw_connection, spans_by_flow

    with raw_connection(store) as raw:
        return {f.flow_id: (f, causal_dag(f)) for f in group_flows(
            events_by_flow(raw, store.dialect), spans_by_flow(raw, store.dialect))}


def clean_store(path: Any, n: int = 1000) -> Store:
    """A store holding `n` clean five-hop flows with their spans."""
    store = new_store(path, "clean.db")
    offsets: dict[tuple[str, int], int] = {}
    rows: list[dict[str, Any]] = []
    sps: list[dict[str, Any]] = []
    for i in range(n):
        e, s = clean_flow(i, offsets=offsets)
        rows += e
        sps += s
    put(store, rows, sps)
    return store
