"""One reconstruction and detection pass over the store: flows, graph and anomalies.

`analyze(store, options)` reads only the store (so collectors sharing one PostgreSQL store
agree), streams events and spans ordered by flow, rebuilds every flow's causal DAG, learns the
choreography graph and the terminal event types, runs every detector except `stuck_outbox`
(the outbox monitor's), and writes idempotently: anomalies by key, flows and graph edges by
upsert (unchanged flows are not rewritten; flows and edges that no longer exist are removed).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import delete, func, select, tuple_

from .detect import (
    duplicate,
    envelope,
    failed_handler,
    orphan,
    out_of_order,
    stuck_flow,
    untraced,
)
from .detect.anomaly import Anomaly, record
from .reconstruct import flows as flowmod
from .reconstruct.graph import CONSUMED_BY, EMITS, GraphBuilder
from .reconstruct.load import (
    collate,
    events_by_flow,
    raw_connection,
    spans_by_flow,
    stream,
    unfound_trace_fetches,
)
from .reconstruct.order import processed_by_group_subject
from .reconstruct.terminal import TerminalTypes
from .store import Store
from .store.schema import anomalies, flows, graph_edges, outbox_sources

_BATCH = 5000
_MAX_KEY = 400  # anomalies.key is String(512), "kind:" included
_FLOW_COLUMNS = ("correlation_id", "status", "started_at_ms", "last_seen_at_ms", "duration_ms",
                 "event_count", "services", "event_types", "trace_ids", "anomaly_count",
                 "variant", "trace_status")


@dataclass
class AnalysisOptions:
    """Thresholds of one pass (the collector's `--stuck-after`, `--skew`, ...)."""

    stuck_after_s: float = 60.0
    stuck_after_by_type: dict[str, float] = field(default_factory=dict)
    skew_s: float = 1.0
    orphan_horizon_s: float = 300.0
    untraced_grace_s: float = 120.0
    jaeger_enabled: bool = False

    def __post_init__(self) -> None:
        for name in ("stuck_after_s", "skew_s", "orphan_horizon_s", "untraced_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"expected {name} to be a number >= 0, got {value!r}")
        for event_type, value in self.stuck_after_by_type.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"expected stuck-after of {event_type!r} to be a number >= 0, "
                                 f"got {value!r}")

    def stuck_after_ms(self, event_type: str) -> float:
        return self.stuck_after_by_type.get(event_type, self.stuck_after_s) * 1000.0


@dataclass
class AnalysisResult:
    """What one pass found and wrote."""

    now_ms: int
    flows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    flows_written: int = 0
    flows_removed: int = 0
    edges: int = 0
    terminal_types: list[str] = field(default_factory=list)
    anomalies_found: dict[str, int] = field(default_factory=dict)  # by kind, this pass
    anomalies_new: int = 0  # rows added (the rest were already recorded)
    elapsed_s: float = 0.0
    # When nothing changed in the store since the last pass (by any collector with the same
    # options) and no time-based change (stuck-after, grace, horizon) is due, the pass is
    # skipped: `skipped` is True and the counts are the last pass's.
    skipped: bool = False
    next_due_ms: int | None = None  # the earliest time a status or anomaly can change by time


class _Sink:
    """Buffers anomalies and records them in batches; tallies them by kind and graph edge."""

    def __init__(self, store: Store, now_ms: int) -> None:
        self.store = store
        self.now_ms = now_ms
        self.buffer: list[Anomaly] = []
        self.by_kind: Counter[str] = Counter()
        self.by_edge: Counter[tuple[str, str, str]] = Counter()
        self.new = 0

    def add(self, found: Iterable[Anomaly]) -> None:
        for a in found:
            if len(a.key) > _MAX_KEY:  # long group names and ids: keep the key within its column
                digest = hashlib.sha256(a.key.encode()).hexdigest()
                a = replace(a, key=f"{a.key[:_MAX_KEY - 65]}~{digest}")
            self.buffer.append(a)
            self.by_kind[a.kind] += 1
            event_type = a.extra.get("type")
            if event_type and a.service:
                if a.group:
                    self.by_edge[(event_type, a.service, CONSUMED_BY)] += 1
                else:
                    self.by_edge[(a.service, event_type, EMITS)] += 1
            if len(self.buffer) >= _BATCH:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        with self.store.engine.begin() as conn:
            self.new += record(self.store, conn, self.buffer, self.now_ms)
        self.buffer = []


def analyze(store: Store, options: AnalysisOptions | None = None,
            now_ms: int | None = None) -> AnalysisResult:
    """Recompute flows and the graph, detect anomalies, write them; returns a summary."""
    options = options or AnalysisOptions()
    started = time.perf_counter()
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    result = AnalysisResult(now_ms=now_ms)
    sink = _Sink(store, now_ms)
    terminal = TerminalTypes()
    graph = GraphBuilder()
    summaries: list[flowmod.FlowSummary] = []
    dialect = store.dialect
    dead = _dead_outbox_flows(store)
    grace_ms = int(options.untraced_grace_s * 1000)
    horizon_ms = int(options.orphan_horizon_s * 1000)
    due = _Due()

    with raw_connection(store) as raw:
        data_fp = _data_fingerprint(raw, options, dead)
        previous = _skip(store, raw, data_fp, now_ms)
        if previous is not None:
            previous.elapsed_s = time.perf_counter() - started
            return previous
        tracing_active = options.jaeger_enabled or _one(raw, "SELECT 1 FROM spans LIMIT 1")
        fetches = unfound_trace_fetches(raw, dialect)
        for flow in flowmod.group_flows(events_by_flow(raw, dialect), spans_by_flow(raw, dialect)):
            dag = flowmod.causal_dag(flow)
            if tracing_active:
                _trace_due(flow, dag, now_ms, grace_ms, due)
            terminal.learn(dag)
            graph.add(flow, dag)
            summaries.append(flowmod.summarize(flow, dag, tracing_active=tracing_active,
                                               untraced_grace_ms=grace_ms, now_ms=now_ms,
                                               fetches=fetches))
            sink.add(envelope.detect(flow))
            sink.add(duplicate.detect(flow, dag))
            sink.add(failed_handler.detect(flow, dag))
            sink.add(out_of_order.detect(flow, dag))
            sink.add(untraced.detect(flow, dag, tracing_active=tracing_active,
                                     jaeger_enabled=options.jaeger_enabled,
                                     grace_s=options.untraced_grace_s, now_ms=now_ms,
                                     fetches=fetches))
        effects = list(orphan.load(raw, dialect))
        for e in effects:
            if e.observed_at_ms + horizon_ms > now_ms:
                due.at(e.observed_at_ms + horizon_ms)
        sink.add(orphan.detect(effects, now_ms=now_ms, horizon_s=options.orphan_horizon_s))
        sink.add(out_of_order.detect_processing(processed_by_group_subject(raw, dialect),
                                                options.skew_s))

    statuses: list[str] = []
    for summary in summaries:
        stuck = flowmod.stuck_leaves(summary, terminal.is_terminal, options.stuck_after_ms,
                                     now_ms)
        st = flowmod.status(summary, dead_outbox=summary.flow_id in dead, stuck=bool(stuck),
                            is_terminal=terminal.is_terminal)
        if st == "stuck":
            sink.add(stuck_flow.detect(summary, stuck, now_ms=now_ms))
        elif st == "in_progress":
            waits = [options.stuck_after_ms(leaf[1]) for leaf in summary.leaves
                     if not terminal.is_terminal(leaf[1])]
            due.at(summary.activity_ms + int(min(waits)))
        statuses.append(st)
    sink.flush()

    with raw_connection(store) as raw:
        anomalies_fp = _one(raw, "SELECT count(*), max(id) FROM anomalies")
    counts = _anomaly_counts(store)
    written, removed = _write_flows(store, summaries, statuses, counts, now_ms)
    edges = graph.rows(sink.by_edge)
    _write_edges(store, edges)

    result.flows = len(summaries)
    result.statuses = dict(Counter(statuses))
    result.flows_written, result.flows_removed = written, removed
    result.edges = len(edges)
    result.terminal_types = terminal.terminal
    result.anomalies_found = dict(sink.by_kind)
    result.anomalies_new = sink.new
    result.next_due_ms = due.ms
    store.set_meta(_STATE_KEY, json.dumps({
        "data": data_fp, "anomalies": list(anomalies_fp or ()), "now_ms": now_ms,
        "next_due_ms": due.ms, "flows": result.flows, "statuses": result.statuses,
        "edges": result.edges, "terminal_types": result.terminal_types}, default=str))
    result.elapsed_s = time.perf_counter() - started
    return result


_STATE_KEY = "analysis.state"


class _Due:
    """The earliest future time at which a status or an anomaly can change by time alone."""

    def __init__(self) -> None:
        self.ms: int | None = None

    def at(self, ms: int) -> None:
        if self.ms is None or ms < self.ms:
            self.ms = ms


def _trace_due(flow: flowmod.Flow, dag: flowmod.Dag, now_ms: int, grace_ms: int,
               due: _Due) -> None:
    """Events whose missing trace becomes `untraced` (and the flow's trace unavailable) later."""
    present: set[str] | None = None
    for e in dag.nodes.values():
        if e.trace_id is None or e.observed_at_ms + grace_ms <= now_ms:
            continue
        if present is None:
            present = flow.span_traces
        if e.trace_id not in present:
            due.at(e.observed_at_ms + grace_ms)


def _one(raw: Any, sql: str) -> Any:
    """The first row of a small query (a plain client-side cursor)."""
    cur = raw.cursor()
    try:
        cur.execute(sql)
        return cur.fetchone()
    finally:
        cur.close()


def _data_fingerprint(raw: Any, options: AnalysisOptions, dead: set[str]) -> list[Any]:
    """What the pass reads, summarised: row counts and latest times of every input table,
    the dead outbox flows and the options. Taken before reading, so a change made while the
    pass runs shows as a difference next time."""
    return [
        list(_one(raw, "SELECT count(*), max(observed_at_ms) FROM events")),
        list(_one(raw, "SELECT count(*), max(received_at_ms) FROM spans")),
        list(_one(raw, "SELECT count(*), max(last_fetch_ms), sum(attempts) FROM trace_fetches")),
        hashlib.sha256("\n".join(sorted(dead)).encode()).hexdigest(),
        repr(options),
    ]


def _skip(store: Store, raw: Any, data_fp: list[Any], now_ms: int) -> AnalysisResult | None:
    """The last pass's result when it still holds: same inputs, same anomalies, nothing due."""
    try:
        state = json.loads(store.get_meta(_STATE_KEY) or "null")
    except ValueError:
        return None
    if not isinstance(state, dict):
        return None
    anomalies_fp = list(_one(raw, "SELECT count(*), max(id) FROM anomalies") or ())
    same = (json.loads(json.dumps(data_fp, default=str)) == state.get("data")
            and json.loads(json.dumps(anomalies_fp, default=str)) == state.get("anomalies"))
    last, due = state.get("now_ms"), state.get("next_due_ms")
    if not same or not isinstance(last, int) or now_ms < last or (due is not None
                                                                  and now_ms >= due):
        return None
    return AnalysisResult(now_ms=now_ms, flows=state.get("flows", 0),
                          statuses=state.get("statuses", {}), edges=state.get("edges", 0),
                          terminal_types=state.get("terminal_types", []), skipped=True,
                          next_due_ms=due)


def _dead_outbox_flows(store: Store) -> set[str]:
    """Correlation ids of dead outbox rows, from the outbox monitor's `stuck` lists."""
    out: set[str] = set()
    with store.engine.connect() as conn:
        for (text,) in conn.execute(select(outbox_sources.c.stuck)):
            try:
                rows = json.loads(text) if text else []
            except ValueError:
                continue
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict) and row.get("status") == "dead" \
                        and row.get("correlation_id"):
                    out.add(str(row["correlation_id"]))
    return out


def _anomaly_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(anomalies.c.correlation_id, func.count())
            .where(anomalies.c.correlation_id.is_not(None))
            .group_by(anomalies.c.correlation_id))
        return {cid: int(n) for cid, n in rows}


def _write_flows(store: Store, summaries: list[flowmod.FlowSummary], statuses: list[str],
                 counts: dict[str, int], now_ms: int) -> tuple[int, int]:
    """Upsert flows that changed, delete flows that no longer have events."""
    changed: list[dict[str, Any]] = []
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
            row = flowmod.flow_row(summary, st, counts.get(fid, 0), now_ms)
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
    for i in range(0, len(gone), _BATCH):
        with store.engine.begin() as conn:
            conn.execute(delete(flows).where(flows.c.correlation_id.in_(gone[i:i + _BATCH])))
    return len(changed), len(gone)


def _write_edges(store: Store, edges: list[dict[str, Any]]) -> None:
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
