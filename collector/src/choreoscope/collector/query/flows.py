"""Flows: the list (filtered, paged, counted in SQL) and one flow in detail.

Every function reads the store only and returns plain JSON-able values in the shapes of
DESIGN.md section 6. Filters are bound parameters, never spliced into SQL.
"""

from __future__ import annotations

import heapq
import re
from typing import Any

from sqlalchemy import exists, false, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from ..store import Store
from ..store.schema import ADDED_COLUMNS, anomalies, events, flows, spans
from ..store.text import cut_id
from ._convert import has_nul, json_list, json_or, rfc3339_ms, rfc3339_us

FLOW_STATUSES = ("in_progress", "completed", "stuck", "failed")

_ANOMALY_COUNT = (
    select(func.count())
    .select_from(anomalies)
    .where(anomalies.c.correlation_id == flows.c.correlation_id)
    .scalar_subquery()
    .label("live_anomaly_count")
)


def list_flows(store: Store, *, status: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Flows, most recently active first (the `choreoscope flows` list)."""
    return search_flows(store, status=status, limit=limit)["flows"]


def search_flows(store: Store, *, offset: int = 0, limit: int | None = 50,
                 **filters: Any) -> dict[str, Any]:
    """One page of flows matching `filters` and the total count: `{total, offset, limit, flows}`.

    Filters (all optional, combined with AND): `status`, `event_type` (the flow has an event of
    that type), `service` (emitted or processed an event of the flow), `subject`,
    `correlation_id` (case-insensitive substring), `variant` (exact), `anomaly_kind` (the flow
    has an anomaly of that kind), `since_ms` / `until_ms` (the flow was active in the window).
    """
    where = _conditions(**filters)
    offset = max(0, int(offset))
    stmt = (
        select(flows, _ANOMALY_COUNT)
        .where(*where)
        .order_by(flows.c.last_seen_at_ms.desc(), flows.c.correlation_id)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(flows).where(*where)).scalar_one()
        rows = conn.execute(stmt).mappings().all()
    return {"total": int(total), "offset": offset, "limit": limit,
            "flows": [_summary(row) for row in rows]}


def count_flows_by_status(store: Store, **filters: Any) -> dict[str, int]:
    """How many flows are in each status (every status present, zeros included)."""
    filters.pop("status", None)
    counts = dict.fromkeys(FLOW_STATUSES, 0)
    stmt = (select(flows.c.status, func.count()).where(*_conditions(**filters))
            .group_by(flows.c.status))
    with store.engine.connect() as conn:
        for status, count in conn.execute(stmt):
            counts[status] = int(count)
    return counts


def count_variants(store: Store, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Variants with their flow counts, rarest first: `[{variant, count}]` (flows known only
    from dead outbox rows have none)."""
    count = func.count().label("count")
    stmt = (select(flows.c.variant, count).where(flows.c.variant != "")
            .group_by(flows.c.variant)
            .order_by(count, flows.c.variant))
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    with store.engine.connect() as conn:
        return [{"variant": v, "count": int(c)} for v, c in conn.execute(stmt)]


def events_per_minute(store: Store, *, since_ms: int | None = None,
                      until_ms: int | None = None) -> list[dict[str, Any]]:
    """Records on the bus per minute (broker timestamp, else store time): `[{minute, count}]`."""
    at = func.coalesce(events.c.broker_ts_ms, events.c.observed_at_ms)
    minute = (at - at % 60000).label("minute_ms")
    where = []
    if since_ms is not None:
        where.append(at >= int(since_ms))
    if until_ms is not None:
        where.append(at < int(until_ms))
    stmt = select(minute, func.count()).where(*where).group_by(minute).order_by(minute)
    with store.engine.connect() as conn:
        return [{"minute": rfc3339_ms(m), "count": int(c)} for m, c in conn.execute(stmt)]


def get_flow(store: Store, correlation_id: str) -> dict[str, Any] | None:
    """One flow with its events (every record, causal then bus order), spans and anomalies.

    None when the store knows nothing of `correlation_id`. A flow whose events are stored but
    not yet reconstructed gets a summary built from its events, with status `in_progress`.
    """
    from .anomalies import list_anomalies

    if has_nul(correlation_id):
        return None
    with store.engine.connect() as conn:
        row = conn.execute(
            select(flows, _ANOMALY_COUNT).where(flows.c.correlation_id == correlation_id)
        ).mappings().first()
        records = conn.execute(
            select(*_EVENT_COLUMNS).where(events.c.flow_id == correlation_id)
        ).mappings().all()
        if row is None and not records:
            return None
        ordered = causal_order(records)
        trace_ids = sorted({r["trace_id"] for r in records if r["trace_id"]}
                           | (set(json_list(row["trace_ids"])) if row is not None else set()))
        span_rows = _flow_spans(conn, correlation_id, trace_ids)
    flow = _summary(row) if row is not None else _summary_from_events(correlation_id, ordered)
    seen: set[str] = set()
    flow["events"] = []
    for r in ordered:
        flow["events"].append(_event(r, duplicate=r["event_id"] in seen))
        if r["event_id"]:
            seen.add(r["event_id"])
    flow["spans"] = [_span(s) for s in span_rows]
    flow["anomalies"] = list_anomalies(store, correlation_id=correlation_id)
    return flow


# What a flow's detail shows of its events: every column a store of any version has.
_EVENT_COLUMNS = [c for c in events.c if c.name not in ADDED_COLUMNS["events"]]

_TRACE_ID = re.compile(r"[0-9A-Fa-f]{32}")
# The columns a flow is found by (correlation, flow and event ids) hold 128 characters.
_ID_LIMIT = 128
assert {flows.c.correlation_id.type.length, events.c.flow_id.type.length,  # type: ignore[attr-defined]
        events.c.event_id.type.length} == {_ID_LIMIT}  # type: ignore[attr-defined]


def resolve_flow_id(store: Store, some_id: str) -> str | None:
    """The flow a user means by `some_id`: a correlation id, else the flow of the event with
    that event id, else of the first event of that trace id (in any letter case, as Jaeger
    and other tools print them). None when nothing matches."""
    if not some_id or has_nul(some_id):
        return None
    some_id = cut_id(some_id, _ID_LIMIT)  # as ingest stored an over-long one
    with store.engine.connect() as conn:
        if conn.execute(select(flows.c.correlation_id)
                        .where(flows.c.correlation_id == some_id)).first() is not None:
            return some_id
        for column in (events.c.flow_id, events.c.event_id):
            found = conn.execute(select(events.c.flow_id).where(column == some_id)
                                 .order_by(events.c.observed_at_ms).limit(1)).scalar()
            if found is not None:
                return str(found)
    first = flows_of_trace(store, some_id, limit=1)
    return first[0] if first else None


def flows_of_trace(store: Store, some_id: str, limit: int = 20) -> list[str]:
    """The flows whose events were sent in trace `some_id` (one request can start several),
    the first published first (by the broker's time of its first event, then the
    collector's, then its position), at most `limit`; [] when `some_id` is no trace id.
    Records of one batch share a time: the position then decides."""
    if not _TRACE_ID.fullmatch(some_id):
        return []
    with store.engine.connect() as conn:
        first = (select(events.c.flow_id,
                        func.coalesce(func.min(events.c.broker_ts_ms),
                                      func.min(events.c.observed_at_ms)).label("at"),
                        func.min(events.c.observed_at_ms).label("seen"),
                        func.min(events.c.offset).label("offset"))
                 .where(events.c.trace_id == some_id.lower()).group_by(events.c.flow_id)
                 .subquery())
        return [str(f) for f in conn.execute(
            select(first.c.flow_id).order_by(first.c.at, first.c.seen, first.c.offset,
                                             first.c.flow_id).limit(limit)).scalars()]


def causal_order(records: Any) -> list[Any]:
    """Records with every effect after the first record of its cause, else in bus order.

    Bus order is the broker timestamp across topics, then (topic, partition, offset). A
    causation cycle (bad data) is broken at its earliest record instead of looping.
    """
    by_bus = sorted(records, key=_bus_key)
    first_of: dict[str, int] = {}
    for i, r in enumerate(by_bus):
        if r["event_id"]:
            first_of.setdefault(r["event_id"], i)
    children: dict[int, list[int]] = {}
    cause_of: dict[int, int] = {}
    ready: list[int] = []
    for i, r in enumerate(by_bus):
        cause = first_of.get(r["causation_id"]) if r["causation_id"] else None
        if cause is None or cause == i:
            ready.append(i)
        else:
            children.setdefault(cause, []).append(i)
            cause_of[i] = cause
    heapq.heapify(ready)
    placed = [False] * len(by_bus)
    out: list[Any] = []
    while len(out) < len(by_bus):
        if not ready:  # a causation cycle: release its earliest record
            heapq.heappush(ready, _earliest_in_cycle(placed.index(False), cause_of))
        i = heapq.heappop(ready)
        if placed[i]:
            continue
        placed[i] = True
        out.append(by_bus[i])
        for j in children.pop(i, ()):
            if not placed[j]:
                heapq.heappush(ready, j)
    return out


def _earliest_in_cycle(start: int, cause_of: dict[int, int]) -> int:
    # Every unplaced record waits for an unplaced cause, so following causes ends in a cycle.
    path: list[int] = []
    seen: set[int] = set()
    i = start
    while i not in seen:
        seen.add(i)
        path.append(i)
        i = cause_of[i]
    return min(path[path.index(i):])


def _bus_key(r: Any) -> tuple[Any, ...]:
    at = r["broker_ts_ms"] if r["broker_ts_ms"] is not None else r["observed_at_ms"]
    return (at, r["topic"], r["partition"], r["offset"])


def _conditions(*, status: str | None = None, event_type: str | None = None,
                service: str | None = None, subject: str | None = None,
                correlation_id: str | None = None, variant: str | None = None,
                anomaly_kind: str | None = None, since_ms: int | None = None,
                until_ms: int | None = None) -> list[ColumnElement[bool]]:
    if has_nul(status, event_type, service, subject, correlation_id, variant, anomaly_kind):
        return [false()]
    flow_id = flows.c.correlation_id
    where: list[ColumnElement[bool]] = []
    if status:
        where.append(flows.c.status == status)
    if event_type:
        # IN, not EXISTS: the type index finds the few flows instead of probing every flow
        where.append(flow_id.in_(select(events.c.flow_id).where(events.c.type == event_type)))
    if subject:
        where.append(exists().where(events.c.flow_id == flow_id, events.c.subject == subject))
    if service:
        where.append(or_(
            exists().where(events.c.flow_id == flow_id, events.c.source == service),
            exists(select(1).select_from(spans.join(events, spans.c.message_id == events.c.event_id))
                   .where(events.c.flow_id == flow_id, spans.c.service == service)),
        ))
    if correlation_id:
        # an id longer than the column was stored cut (start, '#', hash): the whole id pasted
        # into the search names that flow, which no substring of the cut id can match
        cut = cut_id(correlation_id, _ID_LIMIT)
        where.append(flow_id.icontains(correlation_id, autoescape=True) if cut == correlation_id
                     else flow_id == cut)
    if variant:
        where.append(flows.c.variant == variant)
    if anomaly_kind:
        where.append(exists().where(anomalies.c.correlation_id == flow_id,
                                    anomalies.c.kind == anomaly_kind))
    if since_ms is not None:
        where.append(flows.c.last_seen_at_ms >= int(since_ms))
    if until_ms is not None:
        where.append(flows.c.started_at_ms <= int(until_ms))
    return where


def _flow_spans(conn: Any, correlation_id: str, trace_ids: list[str]) -> list[Any]:
    """The spans of the flow's traces and those naming one of its events, by start time.

    Two indexed lookups (trace id is the primary key's prefix, message id has an index)
    instead of one OR that would scan the whole spans table.
    """
    flow_event_ids = select(events.c.event_id).where(events.c.flow_id == correlation_id,
                                                     events.c.event_id.is_not(None))
    found = {}
    lookups = [spans.c.message_id.in_(flow_event_ids)]
    if trace_ids:
        lookups.append(spans.c.trace_id.in_(trace_ids))
    for where in lookups:
        for row in conn.execute(select(spans).where(where)).mappings():
            found[(row["trace_id"], row["span_id"])] = row
    others = _other_flows_spans(conn, correlation_id, found)
    return sorted((row for key, row in found.items() if key not in others),
                  key=lambda r: (r["start_us"], r["trace_id"], r["span_id"]))


_IN_CHUNK = 1000


def _other_flows_spans(conn: Any, correlation_id: str,
                       found: dict[tuple[str, str], Any]) -> set[tuple[str, str]]:
    """The spans of a shared trace that belong to another flow: those naming an event stored
    under another flow (one request publishing two orders: each send, and each handler of
    them), and every span under them. Spans naming no event (the request's own) and those
    naming an event not on the bus (a pending or dead outbox row) stay."""
    named = sorted({row["message_id"] for row in found.values() if row["message_id"]})
    own = select(events.c.event_id).where(events.c.flow_id == correlation_id,
                                          events.c.event_id.is_not(None))
    elsewhere: set[str] = set()
    for i in range(0, len(named), _IN_CHUNK):  # within every store's bound-parameter limit
        elsewhere.update(str(event_id) for event_id in conn.execute(
            select(events.c.event_id).distinct()
            .where(events.c.event_id.in_(named[i:i + _IN_CHUNK]),
                   events.c.flow_id != correlation_id, ~events.c.event_id.in_(own)))
            .scalars())
    if not elsewhere:
        return set()
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for (trace_id, span_id), row in found.items():
        if row["parent_span_id"]:
            children.setdefault((trace_id, row["parent_span_id"]), []).append((trace_id, span_id))
    out: set[tuple[str, str]] = set()
    todo = [key for key, row in found.items() if row["message_id"] in elsewhere]
    while todo:
        key = todo.pop()
        if key not in out:
            out.add(key)
            todo.extend(children.get(key, ()))
    return out


def _summary(row: Any) -> dict[str, Any]:
    live = row.get("live_anomaly_count")
    return {
        "correlation_id": row["correlation_id"],
        "status": row["status"],
        "started_at": rfc3339_ms(row["started_at_ms"]),
        "last_seen_at": rfc3339_ms(row["last_seen_at_ms"]),
        "duration_ms": int(row["duration_ms"]),
        "event_count": int(row["event_count"]),
        "services": json_list(row["services"]),
        "event_types": json_list(row["event_types"]),
        "trace_ids": json_list(row["trace_ids"]),
        "anomaly_count": int(live if live is not None else row["anomaly_count"] or 0),
        "variant": row["variant"],
        "trace_status": row["trace_status"],
    }


def _summary_from_events(correlation_id: str, ordered: list[Any]) -> dict[str, Any]:
    times = [r["time_ms"] or r["broker_ts_ms"] or r["observed_at_ms"] for r in ordered]
    first_types: dict[str, str] = {}
    for r in ordered:
        first_types.setdefault(r["event_id"] or f"{r['topic']}/{r['partition']}/{r['offset']}",
                               r["type"] or "?")
    types = list(first_types.values())
    return {
        "correlation_id": correlation_id,
        "status": "in_progress",
        "started_at": rfc3339_ms(min(times)),
        "last_seen_at": rfc3339_ms(max(times)),
        "duration_ms": int(max(times) - min(times)),
        "event_count": len(first_types),  # as analysis counts: ids, and records without
        "services": sorted({r["source"] for r in ordered if r["source"]}),
        "event_types": sorted({r["type"] for r in ordered if r["type"]}),
        "trace_ids": list(dict.fromkeys(r["trace_id"] for r in ordered if r["trace_id"])),
        "anomaly_count": 0,
        "variant": " > ".join(types),
        "trace_status": None,
    }


def _event(r: Any, *, duplicate: bool) -> dict[str, Any]:
    return {
        "id": r["event_id"],
        "type": r["type"],
        "source": r["source"],
        "subject": r["subject"],
        "causation_id": r["causation_id"],
        "topic": r["topic"],
        "partition": r["partition"],
        "offset": r["offset"],
        "time": r["time"],
        "observed_at": rfc3339_ms(r["observed_at_ms"]),
        "correlation_id": r["correlation_id"],
        "sequence": r["sequence"],
        "key": r["key"],
        "trace_id": r["trace_id"],
        "span_id": r["span_id"],
        "broker_time": rfc3339_ms(r["broker_ts_ms"]),
        "envelope": r["envelope"],
        "problems": json_list(r["problems"]),
        "duplicate": duplicate,
        "data": json_or(r["data"], None),
    }


def _span(s: Any) -> dict[str, Any]:
    return {
        "trace_id": s["trace_id"],
        "span_id": s["span_id"],
        "parent_span_id": s["parent_span_id"],
        "name": s["name"],
        "kind": s["kind"],
        "service": s["service"],
        "start": rfc3339_us(s["start_us"]),
        "start_us": s["start_us"],
        "duration_ms": round(s["duration_us"] / 1000.0, 3),
        "status": s["status"],
        "status_message": s["status_message"],
        "error_type": s["error_type"],
        "message_id": s["message_id"],
        "group": s["consumer_group"],
        "destination": s["destination"],
        "partition": s["partition"],
        "offset": s["offset"],
        "out_of_order": bool(s["out_of_order"]),
        "attributes": json_or(s["attributes"], {}),
        "origin": s["origin"],
    }


__all__ = [
    "FLOW_STATUSES",
    "causal_order",
    "count_flows_by_status",
    "count_variants",
    "events_per_minute",
    "flows_of_trace",
    "get_flow",
    "list_flows",
    "resolve_flow_id",
    "search_flows",
]
