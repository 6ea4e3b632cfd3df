"""Writing a pass's results: flows (only those that changed), graph edges, and the reads
of what others wrote that the pass needs (dead outbox rows, anomaly counts per flow)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, exists, func, select, tuple_

from choreoscope.instrumentation._clock import epoch_us

from ..store import Store
from ..store.schema import anomalies, events, flows, graph_edges, outbox_sources, spans
from ..store.text import cut_id
from .flows import DeadRow, FlowSummary, flow_row
from .load import collate, raw_connection, stream

_BATCH = 5000
_FLOW_COLUMNS = ("correlation_id", "status", "started_at_ms", "last_seen_at_ms", "duration_ms",
                 "event_count", "services", "event_types", "trace_ids", "anomaly_count",
                 "variant", "trace_status")


def dead_outbox_flows(store: Store) -> dict[str, list[DeadRow]]:
    """The dead outbox rows of each correlation id: from the outbox monitor's `stuck` lists,
    and from the `stuck_outbox` anomalies of rows it saw dead (its lists hold only the
    newest). A row in both is taken once."""
    found: dict[str, dict[str, DeadRow]] = {}
    with store.engine.connect() as conn:
        for cid, row_id, service, extra, detected_ms in conn.execute(
                select(anomalies.c.correlation_id, anomalies.c.event_id, anomalies.c.service,
                       anomalies.c.extra, anomalies.c.detected_at_ms).where(
                    anomalies.c.kind == "stuck_outbox", anomalies.c.subkind == "dead",
                    anomalies.c.correlation_id.is_not(None))):
            more = _json(extra)
            more = more if isinstance(more, dict) else {}
            row_id = "" if row_id is None else str(row_id)
            found.setdefault(cid, {})[row_id] = DeadRow(
                row_id=row_id, event_type=_text(more.get("type")), service=service,
                trace_id=_text(more.get("trace_id")),
                created_at_ms=_ms(more.get("created_at")) or int(detected_ms))
        for source, stuck, polled_ms in conn.execute(
                select(outbox_sources.c.source, outbox_sources.c.stuck,
                       outbox_sources.c.last_poll_ms)):
            rows = _json(stuck)
            for row in rows if isinstance(rows, list) else []:
                if not (isinstance(row, dict) and row.get("status") == "dead"
                        and row.get("correlation_id")):
                    continue
                age_s = row.get("age_s")
                created = _ms(row.get("created_at")) or int(
                    polled_ms - (age_s * 1000 if isinstance(age_s, int | float) else 0))
                row_id = "" if row.get("id") is None else str(row["id"])
                # as ingest and the anomalies store an over-long one
                found.setdefault(cut_id(str(row["correlation_id"]), 128), {}).setdefault(
                    row_id, DeadRow(
                        row_id=row_id, event_type=_text(row.get("type")),
                        service=_text(row.get("service")) or source,
                        trace_id=_text(row.get("trace_id")), created_at_ms=created))
    return {cid: list(rows.values()) for cid, rows in found.items()}


def trace_extents(store: Store, trace_ids: list[str]) -> dict[str, tuple[int, int]]:
    """The first start and last end (epoch ms) of the stored spans of each trace: a flow
    known only from dead outbox rows still has the spans of its request and its failed
    publish attempts, which say how long it lasted."""
    out: dict[str, tuple[int, int]] = {}
    wanted = sorted(set(trace_ids))
    with store.engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            for trace_id, first_us, last_us in conn.execute(
                    select(spans.c.trace_id, func.min(spans.c.start_us),
                           func.max(spans.c.start_us + spans.c.duration_us))
                    .where(spans.c.trace_id.in_(wanted[i:i + 500]))
                    .group_by(spans.c.trace_id)):
                out[trace_id] = (int(first_us) // 1000, int(last_us) // 1000)
    return out


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _ms(value: Any) -> int | None:
    us = epoch_us(value) if isinstance(value, str) else None
    return None if us is None else us // 1000


def anomaly_counts(store: Store) -> dict[str, int]:
    """Anomalies recorded per correlation id (every kind, every writer)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(anomalies.c.correlation_id, func.count())
            .where(anomalies.c.correlation_id.is_not(None))
            .group_by(anomalies.c.correlation_id))
        return {cid: int(n) for cid, n in rows}


def write_flows(store: Store, summaries: list[FlowSummary], statuses: list[str],
                 counts: dict[str, int], now_ms: int) -> tuple[int, int]:
    """Upsert flows that changed, delete flows that no longer have events; returns how many
    flows were written and how many deleted."""
    changed: list[Mapping[str, Any]] = []
    gone: list[str] = []
    sql = (f"SELECT {', '.join(_FLOW_COLUMNS)} FROM flows "
           f"ORDER BY correlation_id {collate(store.dialect)}")
    with raw_connection(store) as raw:
        existing = stream(raw, store.dialect, sql, "cs_flows")
        old = next(existing, None)
        for summary, st in zip(summaries, statuses, strict=True):
            fid = summary.flow_id
            while old is not None and old[0] < fid:
                gone.append(old[0])
                old = next(existing, None)
            row = flow_row(summary, st, counts.get(fid, 0), now_ms)
            if old is not None and old[0] == fid:
                same = tuple(row[c] for c in _FLOW_COLUMNS) == tuple(old)
                old = next(existing, None)
                if same:
                    continue
            changed.append(row)
        while old is not None:
            gone.append(old[0])
            old = next(existing, None)
    for i in range(0, len(changed), _BATCH):
        with store.engine.begin() as conn:
            store.upsert(conn, flows, changed[i:i + _BATCH], ["correlation_id"])
    # Gone from this pass's reading of the events, and still without any: a flow another
    # collector wrote from events this pass read too early to see stays.
    deleted = 0
    for i in range(0, len(gone), _BATCH):
        with store.engine.begin() as conn:
            deleted += conn.execute(delete(flows).where(
                flows.c.correlation_id.in_(gone[i:i + _BATCH]),
                ~exists().where(events.c.flow_id == flows.c.correlation_id))).rowcount or 0
    return len(changed), deleted


def write_edges(store: Store, edges: list[Mapping[str, Any]]) -> None:
    """Upsert the edges and remove those no longer learned."""
    keep = {(e["source"], e["target"], e["kind"]) for e in edges}
    with store.engine.begin() as conn:
        store.upsert(conn, graph_edges, edges, ["source", "target", "kind"])
        stale = [k for k in conn.execute(
            select(graph_edges.c.source, graph_edges.c.target, graph_edges.c.kind))
            if tuple(k) not in keep]
        if stale:
            conn.execute(delete(graph_edges).where(
                tuple_(graph_edges.c.source, graph_edges.c.target, graph_edges.c.kind)
                .in_([tuple(k) for k in stale])))
