"""Group events and spans into flows; the causal DAG, variant and status of one flow.

A flow is every event and span sharing a correlation id (`events.flow_id`). Its causal DAG has
one node per distinct event id (a duplicate publish does not add one; an event without an id
is its own node, named `topic/partition/offset`) and an edge cause -> effect from the effect's
causation id, or, when that is missing, from span parents (the effect's producer span sits
under the CONSUMER span that handled the cause). Status, first match wins: `failed`, `stuck`,
`completed`, `in_progress` (DESIGN.md section 4, "Definitions").
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from json.encoder import encode_basestring_ascii as _quote

from .load import EventRow, SpanRow

VARIANT_SEPARATOR = " > "
UNKNOWN_TYPE = "?"


def node_id(event: EventRow) -> str:
    """The DAG node of an event: its id, or its bus position when it has none."""
    return event.event_id or f"{event.topic}/{event.partition}/{event.offset}"


def unsampled(event: EventRow) -> bool:
    """Whether the event's traceparent says its producer did not record the span (a sampler
    said no): no trace of it will ever reach Jaeger or the receiver."""
    return event.trace_sampled is not None and not event.trace_sampled


def bus_ms(event: EventRow) -> int:
    """When the event reached the bus: broker timestamp, else ce_time, else observation."""
    if event.broker_ts_ms is not None:
        return event.broker_ts_ms
    if event.time_ms is not None:
        return event.time_ms
    return event.observed_at_ms


@dataclass
class Flow:
    """The events (every record, duplicates included) and spans of one flow."""

    flow_id: str
    events: list[EventRow]
    spans: list[SpanRow] = field(default_factory=list)

    @property
    def span_traces(self) -> set[str]:
        """Trace ids of which a span joined this flow."""
        return {s.trace_id for s in self.spans}


@dataclass
class Dag:
    """The causal DAG of a flow. `nodes` holds the first record (bus order) of each event."""

    nodes: dict[str, EventRow]
    cause: dict[str, str]  # effect -> cause, both in the flow
    children: dict[str, list[str]]
    order: list[str]  # topological, ties broken by bus time then id

    @property
    def leaves(self) -> list[str]:
        """Events that caused nothing (yet), in causal order."""
        return [n for n in self.order if n not in self.children]


@dataclass(slots=True)
class FlowSummary:
    """What the flows row needs, before the terminal types of the whole graph are known."""

    flow_id: str
    started_at_ms: int
    last_seen_at_ms: int
    activity_ms: int  # latest bus time (capped by observation) or span end: "something happened"
    event_count: int
    services: str  # JSON list, sorted
    event_types: str  # JSON list, in causal order
    trace_ids: str  # JSON list, the trace seen first first (ties by id)
    variant: str
    failed: bool
    leaves: list[tuple[str, str, str | None, str | None]]  # (node, type, subject, source)
    trace_status: str


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A dead outbox row as the outbox monitor reported it: its event never reached the bus,
    and its flow is failed (DESIGN.md section 4, "Definitions")."""

    row_id: str
    event_type: str | None
    service: str | None
    trace_id: str | None
    created_at_ms: int


def outbox_only(flow_id: str, rows: Iterable[DeadRow],
                traced: Mapping[str, tuple[int, int]] | None = None) -> FlowSummary:
    """The summary of a flow known only from its dead outbox rows: none of its events reached
    the bus, so it has no event, no variant and no DAG. Its time runs from the rows'
    creation, or the first span of their traces, to the last of those (`traced`: first start
    and last end of each trace's stored spans, in ms), as its trace is available when any
    span of it is stored."""
    rows = sorted(rows, key=lambda r: (r.created_at_ms, r.row_id))
    traces = list(dict.fromkeys(r.trace_id for r in rows if r.trace_id))
    extents = [traced[t] for t in traces if traced and t in traced]
    started = min([rows[0].created_at_ms, *(first for first, _ in extents)])
    last = max([rows[-1].created_at_ms, *(end for _, end in extents)])
    return FlowSummary(
        flow_id=flow_id,
        started_at_ms=started,
        last_seen_at_ms=last,
        activity_ms=last,
        event_count=0,
        services=json_list(sorted({r.service for r in rows if r.service})),
        event_types=json_list(list(dict.fromkeys(r.event_type for r in rows if r.event_type))),
        trace_ids=json_list(traces),
        variant="",
        failed=True,
        leaves=[],
        trace_status=("available" if extents else "unavailable") if traces else "none",
    )


def group_flows(events: Iterable[EventRow], spans: Iterable[SpanRow]) -> Iterator[Flow]:
    """Merge two streams sorted by flow id into flows (spans of unknown flows are skipped)."""
    span_iter = iter(spans)
    pending = next(span_iter, None)
    for flow_id, rows in groupby(events, key=lambda e: e.flow_id):
        flow = Flow(flow_id, list(rows))
        while pending is not None and pending.flow_id < flow_id:
            pending = next(span_iter, None)
        while pending is not None and pending.flow_id == flow_id:
            flow.spans.append(pending)
            pending = next(span_iter, None)
        if flow.spans:
            flow.spans = without_receive_halves(flow.spans)
        yield flow


def without_receive_halves(spans: list[SpanRow]) -> list[SpanRow]:
    """The spans, less the `receive` span OpenTelemetry's own Kafka instrumentation adds
    beside ours: a CONSUMER span without a consumer group, of a message that a CONSUMER span
    of the same service with a group also processed, is the same processing seen twice (its
    `{topic} receive` span ends as the record is handed over, before the handler runs)."""
    handled = {(s.message_id, s.service) for s in spans
               if s.kind == "consumer" and s.group and s.message_id}
    if not handled:
        return spans
    return [s for s in spans if not (s.kind == "consumer" and not s.group
                                     and (s.message_id, s.service) in handled)]


def causal_dag(flow: Flow) -> Dag:
    """Nodes, cause edges and a topological order (ties by bus time, then id)."""
    nodes: dict[str, EventRow] = {}
    for e in flow.events:
        n = node_id(e)
        first = nodes.get(n)
        if first is None or (bus_ms(e), e.offset) < (bus_ms(first), first.offset):
            nodes[n] = e
    cause: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    by_span: dict[str, SpanRow] | None = None
    for n, e in nodes.items():
        c = e.causation_id
        if c is None and e.span_id is not None and flow.spans:
            if by_span is None:
                by_span = {s.span_id: s for s in flow.spans}
            c = _cause_from_spans(by_span, e.span_id)
        if c is not None and c != n and c in nodes:
            cause[n] = c
            children.setdefault(c, []).append(n)
    return Dag(nodes, cause, children, _topological(nodes, cause, children))


def _cause_from_spans(by_span: Mapping[str, SpanRow], span_id: str) -> str | None:
    """The event handled by the CONSUMER span above the producer span (at most 3 levels up)."""
    span = by_span.get(span_id)
    for _ in range(3):
        if span is None or span.parent_span_id is None:
            return None
        span = by_span.get(span.parent_span_id)
        if span is not None and span.kind == "consumer":
            return span.message_id
    return None


def _topological(nodes: Mapping[str, EventRow], cause: Mapping[str, str],
                 children: Mapping[str, list[str]],
                 key: Callable[[str], int | str] | None = None) -> list[str]:
    """Causes before their effects; of the events ready at once, the least `key` first (by
    default the bus time). Events in a causation cycle come last, by `key`."""
    if key is None:
        key = _bus_time_of(nodes)
    heap = [(key(n), n) for n in nodes if n not in cause]
    heapq.heapify(heap)
    order: list[str] = []
    seen: set[str] = set()
    while heap:
        _, n = heapq.heappop(heap)
        if n in seen:
            continue
        seen.add(n)
        order.append(n)
        for child in children.get(n, ()):
            heapq.heappush(heap, (key(child), child))
    if len(order) < len(nodes):  # a causation cycle: place the rest by key
        order.extend(sorted((n for n in nodes if n not in seen), key=lambda n: (key(n), n)))
    return order


def _bus_time_of(nodes: Mapping[str, EventRow]) -> Callable[[str], int]:
    return lambda n: bus_ms(nodes[n])


def variant(dag: Dag) -> str:
    """Event types in causal order, joined with " > ".

    Events of parallel branches (none caused the other) come in the order of their types,
    then of what follows them, never in the order they happened to reach the bus: flows of
    one causal shape are one variant however their branches interleaved, so a variant is
    rare for its shape, never for its timing."""
    nodes, children = dag.nodes, dag.children
    if len(nodes) - len(dag.cause) <= 1 and all(len(c) == 1 for c in children.values()):
        # One chain: no parallel branches, the topological order is the only one.
        return VARIANT_SEPARATOR.join(nodes[n].type or UNKNOWN_TYPE for n in dag.order)
    shape = _shapes(dag)
    order = _topological(nodes, dag.cause, children, shape.__getitem__)
    return VARIANT_SEPARATOR.join(nodes[n].type or UNKNOWN_TYPE for n in order)


def _shapes(dag: Dag) -> dict[str, str]:
    """Per event, a text that is the same for two events exactly when they have one type and
    what they caused has the same shape: its type, then its effects' shapes in order (a
    digest beyond 64 characters, so it stays short in a long chain, the same in every
    process)."""
    shape: dict[str, str] = {}
    for n in reversed(dag.order):
        kind = dag.nodes[n].type or UNKNOWN_TYPE
        below = sorted(shape.get(c, "") for c in dag.children.get(n, ()))
        text = f"{kind}({','.join(below)})" if below else kind
        shape[n] = text if len(text) <= 64 else (
            kind + "#" + hashlib.sha256(text.encode()).hexdigest()[:32])
    return shape


def summarize(flow: Flow, dag: Dag, *, tracing_active: bool, untraced_grace_ms: int,
              now_ms: int, fetches: Mapping[str, str] | None = None) -> FlowSummary:
    """Everything of the flows row except status and anomaly count."""
    started = last = bus_ms(flow.events[0])
    activity = min(started, flow.events[0].observed_at_ms)
    services: set[str] = set()
    trace_ids: dict[str, int] = {}  # trace id -> when it was first seen
    for e in flow.events:
        t = bus_ms(e)
        if t < started:
            started = t
        elif t > last:
            last = t
        # An event happened when it reached the bus, and no later than the collector read it
        # (a producer clock running ahead cannot keep its flow from ever being stuck); a
        # backlog read today is as idle as its bus times say.
        happened = t if t < e.observed_at_ms else e.observed_at_ms
        if happened > activity:
            activity = happened
        if e.source:
            services.add(e.source)
        if e.trace_id and trace_ids.get(e.trace_id, t + 1) > t:
            trace_ids[e.trace_id] = t
    failed = False
    for s in flow.spans:
        start_ms = s.start_us // 1000
        end_ms = (s.start_us + s.duration_us) // 1000
        if start_ms < started:
            started = start_ms
        if end_ms > last:
            last = end_ms
        if end_ms > activity:
            activity = end_ms
        if s.service:
            services.add(s.service)
        if trace_ids.get(s.trace_id, start_ms + 1) > start_ms:
            trace_ids[s.trace_id] = start_ms
        if s.status == "error" and s.kind == "consumer":
            failed = True
    nodes = dag.nodes
    types = list(dict.fromkeys(t for t in (nodes[n].type for n in dag.order) if t))
    leaves = [(n, nodes[n].type or UNKNOWN_TYPE, nodes[n].subject, nodes[n].source)
              for n in dag.leaves]
    return FlowSummary(
        flow_id=flow.flow_id,
        started_at_ms=started,
        last_seen_at_ms=last,
        activity_ms=activity,
        event_count=len(nodes),
        services=json_list(sorted(services)),
        event_types=json_list(types),
        trace_ids=json_list(sorted(trace_ids, key=lambda t: (trace_ids[t], t))),
        variant=variant(dag),
        failed=failed,
        leaves=leaves,
        trace_status=_trace_status(flow, tracing_active, untraced_grace_ms, now_ms,
                                   fetches or {}),
    )


def json_list(items: list[str]) -> str:
    """`json.dumps(items)` for a list of strings, without the encoder's per-call set-up."""
    return "[" + ", ".join(map(_quote, items)) + "]"


def _trace_status(flow: Flow, tracing_active: bool, grace_ms: int, now_ms: int,
                  fetches: Mapping[str, str]) -> str:
    traced = [e for e in flow.events if e.trace_id]
    if not traced:
        return "none"
    if flow.spans:
        return "available"
    traced = [e for e in traced if not unsampled(e)]
    if not traced:
        return "unsampled"
    if not tracing_active:
        return "unavailable"
    if any(fetches.get(e.trace_id) == "error" for e in traced):  # type: ignore[arg-type]
        return "pending"
    first = min(e.observed_at_ms for e in traced)
    return "unavailable" if now_ms - first >= grace_ms else "pending"


def stuck_leaves(summary: FlowSummary, is_terminal: Callable[[str], bool],
                 stuck_after_ms: Callable[[str], float], now_ms: int
                 ) -> list[tuple[str, str, str | None, str | None]]:
    """Leaves of a non-terminal type that waited longer than their type's stuck-after."""
    idle = now_ms - summary.activity_ms
    return [leaf for leaf in summary.leaves
            if not is_terminal(leaf[1]) and idle >= stuck_after_ms(leaf[1])]


def status(summary: FlowSummary, *, dead_outbox: bool, stuck: bool,
           is_terminal: Callable[[str], bool]) -> str:
    """failed, stuck, completed or in_progress: the first that matches."""
    if summary.failed or dead_outbox:
        return "failed"
    if stuck:
        return "stuck"
    if all(is_terminal(leaf[1]) for leaf in summary.leaves):
        return "completed"
    return "in_progress"


def flow_row(summary: FlowSummary, status_: str, anomaly_count: int,
             updated_at_ms: int) -> dict[str, object]:
    """The `flows` table row."""
    return {
        "correlation_id": summary.flow_id,
        "status": status_,
        "started_at_ms": summary.started_at_ms,
        "last_seen_at_ms": summary.last_seen_at_ms,
        "duration_ms": summary.last_seen_at_ms - summary.started_at_ms,
        "event_count": summary.event_count,
        "services": summary.services,
        "event_types": summary.event_types,
        "trace_ids": summary.trace_ids,
        "anomaly_count": anomaly_count,
        "variant": summary.variant,
        "trace_status": summary.trace_status,
        "updated_at_ms": updated_at_ms,
    }
