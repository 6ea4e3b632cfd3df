"""One reconstruction and detection pass over the store: flows, graph and anomalies.

`analyze(store, options)` reads only the store (so collectors sharing one PostgreSQL store
agree), streams events and spans ordered by flow, rebuilds every flow's causal DAG, learns the
choreography graph and the terminal event types, runs every detector except `stuck_outbox`
(the outbox monitor's), and writes idempotently: anomalies by key, flows and graph edges by
upsert (unchanged flows are not rewritten; flows and edges that no longer exist are removed).
A pass over an unchanged store is skipped until something becomes due by time alone
(`reconstruct/skip.py`). Every pass is a full recomputation otherwise: not incremental.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

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
from .reconstruct import skip
from .reconstruct.graph import CONSUMED_BY, EMITS, GraphBuilder
from .reconstruct.load import (
    events_by_flow,
    raw_connection,
    spans_by_flow,
    unfound_trace_fetches,
)
from .reconstruct.order import processed_by_group_subject
from .reconstruct.terminal import TerminalTypes
from .reconstruct.write import (
    anomaly_counts,
    dead_outbox_flows,
    trace_extents,
    write_edges,
    write_flows,
)
from .store import Store
from .store.engine import UNAVAILABLE_ERRORS, describe_error
from .traces.consumed import name_pending

log = logging.getLogger(__name__)

_BATCH = 5000
_MAX_KEY = 400  # anomalies.key is String(512), "kind:" included


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
    """Buffers anomalies and records them in batches; tallies them by kind and graph edge.

    An anomaly is detected when it is recorded (`clock`), never before the pass began: the
    pass reads spans and events that arrive while it runs, and its evidence must not be
    younger than its detection. Without a clock (a pass at a given time), at `now_ms`."""

    def __init__(self, store: Store, now_ms: int,
                 clock: Callable[[], int] | None = None) -> None:
        self.store = store
        self.now_ms = now_ms
        self.clock = clock
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
        detected_ms = self.now_ms if self.clock is None else max(self.now_ms, self.clock())
        with self.store.engine.begin() as conn:
            self.new += record(self.store, conn, self.buffer, detected_ms)
        self.buffer = []


class AnalysisInterrupted(Exception):
    """`stop` was set during a pass: it ended without writing flows or the graph (anomalies
    recorded so far stay: they are idempotent); the next pass does all of it again."""


def analyze(store: Store, options: AnalysisOptions | None = None,
            now_ms: int | None = None, stop: threading.Event | None = None) -> AnalysisResult:
    """Recompute flows and the graph, detect anomalies, write them; returns a summary.

    A long pass over a large store ends early, raising `AnalysisInterrupted`, once `stop` is
    set: a collector asked to stop does not wait for it."""
    options = options or AnalysisOptions()
    started = time.perf_counter()
    clock = None
    if now_ms is None:
        now_ms, clock = int(time.time() * 1000), lambda: int(time.time() * 1000)
    now_ms = int(now_ms)
    result = AnalysisResult(now_ms=now_ms)
    sink = _Sink(store, now_ms, clock)
    terminal = TerminalTypes()
    graph = GraphBuilder()
    summaries: list[flowmod.FlowSummary] = []
    dialect = store.dialect
    dead = dead_outbox_flows(store)
    grace_ms = int(options.untraced_grace_s * 1000)
    horizon_ms = int(options.orphan_horizon_s * 1000)
    due = skip.Due()

    # Consumer spans named by the events that arrived since: those events change the data
    # fingerprint, so a pass that names spans is never skipped. Another collector naming the
    # same spans at once may deadlock ours on PostgreSQL: the next pass names them.
    try:
        with store.engine.begin() as conn:
            name_pending(conn, now_ms)
    except UNAVAILABLE_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001
        log.warning("consumer spans could not be named this pass (%s); the next pass does",
                    describe_error(exc))
    with raw_connection(store) as raw:
        data_fp = skip.data_fingerprint(raw, options, dead)
        last = skip.previous(store, raw, data_fp, now_ms)
        if last is not None:
            skip.checked(store, now_ms)  # the flows stand as of now
            return AnalysisResult(
                now_ms=now_ms, flows=last.get("flows", 0), statuses=last.get("statuses", {}),
                edges=last.get("edges", 0), terminal_types=last.get("terminal_types", []),
                skipped=True, next_due_ms=last.get("next_due_ms"),
                elapsed_s=time.perf_counter() - started)
        tracing_active = options.jaeger_enabled or bool(
            skip.one(raw, "SELECT 1 FROM spans LIMIT 1"))
        fetches = unfound_trace_fetches(raw, dialect)
        for flow in flowmod.group_flows(events_by_flow(raw, dialect), spans_by_flow(raw, dialect)):
            if stop is not None and stop.is_set():
                raise AnalysisInterrupted
            dag = flowmod.causal_dag(flow)
            if tracing_active:
                skip.trace_due(flow, dag, now_ms, grace_ms, due)
            terminal.learn(dag)
            graph.add(flow, dag)
            summaries.append(flowmod.summarize(flow, dag, tracing_active=tracing_active,
                                               untraced_grace_ms=grace_ms, now_ms=now_ms,
                                               fetches=fetches))
            sink.add(envelope.detect(flow))
            sink.add(duplicate.detect(flow, dag))
            sink.add(failed_handler.detect(flow, dag))
            sink.add(out_of_order.detect(flow, dag, options.skew_s))
            sink.add(untraced.detect(flow, dag, tracing_active=tracing_active,
                                     jaeger_enabled=options.jaeger_enabled,
                                     grace_s=options.untraced_grace_s, now_ms=now_ms,
                                     fetches=fetches))
        effects = list(orphan.load(raw, dialect))
        for e in effects:
            if e.observed_at_ms + horizon_ms > now_ms:
                due.at(e.observed_at_ms + horizon_ms)
        sink.add(orphan.detect(effects, now_ms=now_ms, horizon_s=options.orphan_horizon_s))
        sink.add(duplicate.detect_across_flows(duplicate.load_repeated(raw, dialect)))
        sink.add(out_of_order.detect_processing(processed_by_group_subject(raw, dialect),
                                                options.skew_s))

    # Flows whose only trace is a dead outbox row: their events never reached the bus.
    known = {s.flow_id for s in summaries}
    lone = sorted((cid, rows) for cid, rows in dead.items() if cid not in known)
    traced = trace_extents(store, [r.trace_id for _, rows in lone for r in rows if r.trace_id])
    alone = [flowmod.outbox_only(cid, rows, traced) for cid, rows in lone]
    if alone:  # write_flows walks the flows in id order
        summaries = list(heapq.merge(summaries, alone, key=lambda s: s.flow_id))

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
    if stop is not None and stop.is_set():
        raise AnalysisInterrupted

    with raw_connection(store) as raw:
        anomalies_fp = skip.anomalies_fingerprint(raw)
    counts = anomaly_counts(store)
    written, removed = write_flows(store, summaries, statuses, counts, now_ms)
    edges = graph.rows(sink.by_edge)
    write_edges(store, edges)

    result.flows = len(summaries)
    result.statuses = dict(Counter(statuses))
    result.flows_written, result.flows_removed = written, removed
    result.edges = len(edges)
    result.terminal_types = terminal.terminal
    result.anomalies_found = dict(sink.by_kind)
    result.anomalies_new = sink.new
    result.next_due_ms = due.ms
    result.elapsed_s = time.perf_counter() - started
    skip.save(store, data_fp=data_fp, anomalies_fp=anomalies_fp, now_ms=now_ms,
              next_due_ms=due.ms, summary={"flows": result.flows, "statuses": result.statuses,
                                           "edges": result.edges,
                                           "terminal_types": result.terminal_types,
                                           "elapsed_s": round(result.elapsed_s, 3)})
    return result
