"""The choreography graph: service -emits-> event type -consumed_by-> service.

Learned from traffic, aggregated over flows. `emits` edges count distinct events (a duplicate
publish does not add one) and carry the service's reaction time: from the start of its CONSUMER
span processing the cause to the effect's publish (broker timestamp, else ce_time), both in whole
milliseconds, the resolution of those timestamps (a sub-millisecond handler reads 0 or 1 ms, never
less than 0 on one clock). Of several processings of the cause (a redelivery, a retry after a
failure), the one that published the effect is the last to start before its publish; root
events and effects without such a span add no latency. `consumed_by` edges count CONSUMER
spans (each processing) and carry the latency from publish (broker timestamp, else ce_time)
to processing start, as p50 and p95 (linear interpolation between closest ranks). A flow without any CONSUMER span (no traces:
Jaeger not configured or down, spans lost) still shows who consumed what through its causation
ids: a service that emitted an effect of event X processed X. Those processings count once per
(cause, service) and carry no latency.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

from .flows import UNKNOWN_TYPE, Dag, Flow

EMITS = "emits"
CONSUMED_BY = "consumed_by"


def percentile(sorted_values: array | list[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted values, None for no values."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def _reacted_at(starts: list[int], published: int) -> int:
    """The start of the processing that published an effect at `published`: the last to
    start by then; the first one when none did (clocks apart)."""
    before = [at for at in starts if at <= published]
    return max(before) if before else min(starts)


class GraphBuilder:
    """Accumulates edges flow by flow; `rows()` gives the `graph_edges` rows."""

    def __init__(self) -> None:
        self.emits: dict[tuple[str, str], int] = {}
        self.reactions: dict[tuple[str, str], array] = {}  # emits latencies
        self.consumed: dict[tuple[str, str], array] = {}
        self.consumed_unknown: dict[tuple[str, str], int] = {}  # processings without latency

    def add(self, flow: Flow, dag: Dag) -> None:
        emits = self.emits
        for e in dag.nodes.values():
            if e.source:
                k = (e.source, e.type or UNKNOWN_TYPE)
                emits[k] = emits.get(k, 0) + 1
        traced = False
        started: dict[tuple[str, str], list[int]] = {}  # (event id, service) -> processings
        for s in flow.spans:
            if s.kind != "consumer" or s.message_id is None:
                continue
            traced = True
            handled = dag.nodes.get(s.message_id)
            service = s.service or s.group
            if handled is None or not service:
                continue
            # whole ms, as the effect's publish time
            started.setdefault((s.message_id, service), []).append(s.start_us // 1000)
            k = (handled.type or UNKNOWN_TYPE, service)
            published = (handled.broker_ts_ms if handled.broker_ts_ms is not None
                         else handled.time_ms)
            if published is None:
                self.consumed_unknown[k] = self.consumed_unknown.get(k, 0) + 1
                self.consumed.setdefault(k, array("d"))
                continue
            self.consumed.setdefault(k, array("d")).append(s.start_us / 1000.0 - published)
        if not traced:
            self._add_from_causation(dag)
            return
        for effect, cause in dag.cause.items():
            e = dag.nodes[effect]
            source = e.source
            starts = started.get((cause, source)) if source else None
            published = e.broker_ts_ms if e.broker_ts_ms is not None else e.time_ms
            if source and starts and published is not None:
                began = _reacted_at(starts, published)
                k = (source, e.type or UNKNOWN_TYPE)
                self.reactions.setdefault(k, array("d")).append(published - began)

    def _add_from_causation(self, dag: Dag) -> None:
        """`consumed_by` without spans: the emitting service of each effect processed its cause."""
        seen: set[tuple[str, str]] = set()
        for effect, cause in dag.cause.items():
            service = dag.nodes[effect].source
            if not service or (cause, service) in seen:
                continue
            seen.add((cause, service))
            k = (dag.nodes[cause].type or UNKNOWN_TYPE, service)
            self.consumed_unknown[k] = self.consumed_unknown.get(k, 0) + 1
            self.consumed.setdefault(k, array("d"))

    def rows(self, anomaly_counts: Mapping[tuple[str, str, str], int] | None = None
             ) -> list[Mapping[str, Any]]:
        counts = anomaly_counts or {}
        out: list[Mapping[str, Any]] = []
        for (src, typ), n in sorted(self.emits.items()):
            reactions = array("d", sorted(self.reactions.get((src, typ), ())))
            out.append({"source": src, "target": typ, "kind": EMITS, "count": n,
                        "p50_ms": percentile(reactions, 50), "p95_ms": percentile(reactions, 95),
                        "anomaly_count": counts.get((src, typ, EMITS), 0)})
        for (typ, svc), values in sorted(self.consumed.items()):
            ordered = array("d", sorted(values))
            out.append({"source": typ, "target": svc, "kind": CONSUMED_BY,
                        "count": len(values) + self.consumed_unknown.get((typ, svc), 0),
                        "p50_ms": percentile(ordered, 50), "p95_ms": percentile(ordered, 95),
                        "anomaly_count": counts.get((typ, svc, CONSUMED_BY), 0)})
        return out
