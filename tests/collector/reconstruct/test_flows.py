"""Flows: grouping, the causal DAG (causation ids and span parents), variant, summary, status."""

from __future__ import annotations

import json

from choreoscope.collector.reconstruct.flows import (
    Flow,
    causal_dag,
    group_flows,
    status,
    stuck_leaves,
    summarize,
    variant,
)
from tests.collector.reconstruct.factory import (
    T0,
    consumer,
    ev,
    load_flows,
    new_store,
    producer,
    put,
    span_of,
)


def test_dag_merges_duplicates_and_orders_causally(tmp_path):
    """Duplicates are one node; the order follows causes, not the order topics were read."""
    store = new_store(tmp_path)
    put(store, [
        # read order (topic, offset) differs from causal order; e2 is published twice
        ev("e3", "shipment.scheduled", flow="f1", topic="a", cause="e2", ts=T0 + 2),
        ev("e2", "payment.authorized", flow="f1", topic="b", cause="e1", ts=T0 + 9),
        ev("e2", "payment.authorized", flow="f1", topic="b", offset=1, cause="e1", ts=T0 + 1),
        ev("e1", "order.placed", flow="f1", topic="c", ts=T0 + 5),
        ev("e4", "inventory.reserved", flow="f1", topic="d", cause="e1", ts=T0 + 3),
    ])
    flow, dag = load_flows(store)["f1"]
    assert len(flow.events) == 5
    assert sorted(dag.nodes) == ["e1", "e2", "e3", "e4"]
    assert dag.nodes["e2"].offset == 1  # the first on the bus
    assert dag.cause == {"e3": "e2", "e2": "e1", "e4": "e1"}
    assert dag.order == ["e1", "e2", "e3", "e4"]  # e2 (t+1) before e4 (t+3), then e3 (t+2)
    assert dag.leaves == ["e3", "e4"]
    # the parallel branches by type (inventory before payment), not by bus time
    assert variant(dag) == ("order.placed > inventory.reserved > payment.authorized > "
                            "shipment.scheduled")


def test_interleaved_parallel_branches_are_one_variant(tmp_path):
    """Flows of one causal shape are one variant whatever order their parallel branches
    reached the bus in; a different shape (the same types caused differently) is another.
    Two events of one type are placed by what they caused, not by their bus times."""
    store = new_store(tmp_path)
    shape = [("p", "order.placed", None), ("n1", "notification.sent", "p"),
             ("a", "payment.authorized", "p"), ("r", "inventory.reserved", "a"),
             ("n2", "notification.sent", "a"), ("s", "shipment.scheduled", "r"),
             ("x", "notification.sent", "n1")]
    timings = [[0, 1, 2, 3, 4, 5, 6], [0, 9, 1, 8, 2, 3, 10], [0, 5, 1, 2, 6, 3, 4],
               [0, 2, 6, 7, 1, 8, 3]]
    rows = [ev(f"{flow}-{name}", kind, flow=f"f{flow}", offset=flow * 10 + i,
               cause=f"{flow}-{cause}" if cause else None, ts=T0 + t)
            for flow, times in enumerate(timings)
            for i, ((name, kind, cause), t) in enumerate(zip(shape, times, strict=True))]
    # another shape: the second notification caused by the shipment, not by the payment
    rows += [ev(f"o-{name}", kind, flow="fo", offset=100 + i,
                cause=("o-s" if name == "n2" else f"o-{cause}") if cause else None, ts=T0 + i)
             for i, (name, kind, cause) in enumerate(shape)]
    put(store, rows)
    variants = {flow_id: variant(dag) for flow_id, (_, dag) in load_flows(store).items()}
    assert sorted(variants) == ["f0", "f1", "f2", "f3", "fo"]
    assert set(variants.values()) == {
        "order.placed > notification.sent > notification.sent > payment.authorized > "
        "inventory.reserved > notification.sent > shipment.scheduled",
        "order.placed > notification.sent > notification.sent > payment.authorized > "
        "inventory.reserved > shipment.scheduled > notification.sent",
    }
    assert len({variants[f"f{i}"] for i in range(len(timings))}) == 1
    assert variants["fo"] != variants["f0"]


def test_span_parents_give_the_cause_when_causation_id_is_missing(tmp_path):
    """e2 has no causation id but its producer span sits under the span that processed e1."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", ts=T0)
    e2 = ev("e2", "payment.authorized", flow="f1", topic="payments", ts=T0 + 10)
    handling = consumer(e1, "payments", start_ms=T0 + 2)
    internal = producer(e1)  # an INTERNAL span between the handler and the send
    internal.update(span_id=span_of("work"), parent_span_id=handling["span_id"],
                    kind="internal", message_id=None)
    put(store, [e1, e2], [producer(e1), handling, internal, producer(e2, parent=internal["span_id"])])
    _, dag = load_flows(store)["f1"]
    assert dag.cause == {"e2": "e1"}


def test_causation_cycle_still_orders_every_event(tmp_path):
    """Events causing each other in a cycle all appear in the order, by time."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "a.happened", flow="f1", cause="e2", ts=T0 + 1),
                ev("e2", "b.happened", flow="f1", offset=1, cause="e1", ts=T0)])
    _, dag = load_flows(store)["f1"]
    assert dag.order == ["e2", "e1"]


def test_group_flows_skips_spans_of_unknown_flows():
    """Spans are merged into the flow of the same id; spans of flows without events are skipped."""
    from choreoscope.collector.reconstruct.load import EventRow, SpanRow

    def e(flow):
        return EventRow(flow, "x" + flow, "t.happened", "s", None, None, None, None, None, None,
                        T0, T0, "t", 0, 0, None)

    def s(flow):
        return SpanRow(flow, "0" * 32, flow.ljust(16, "0"), None, "consumer", "svc", "g", None, 0,
                       1, "ok", None, None, None, None, None)

    flows = list(group_flows([e("b"), e("d")], [s("a"), s("b"), s("b"), s("c"), s("e")]))
    assert [(f.flow_id, len(f.spans)) for f in flows] == [("b", 2), ("d", 0)]


def test_summary_counts_distinct_events_and_joins_spans(tmp_path):
    """event_count ignores duplicate records; services and trace ids include the spans'."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", ts=T0)
    e1_again = ev("e1", "order.placed", flow="f1", offset=1, ts=T0 + 50)
    put(store, [e1, e1_again], [consumer(e1, "billing", start_ms=T0 + 100, service="billing-svc")])
    flow, dag = load_flows(store)["f1"]
    s = summarize(flow, dag, tracing_active=True, untraced_grace_ms=120_000, now_ms=T0)
    assert (s.event_count, json.loads(s.services), json.loads(s.event_types)) == (
        1, ["billing-svc", "orders"], ["order.placed"])
    assert json.loads(s.trace_ids) == [e1["trace_id"]]
    assert (s.started_at_ms, s.last_seen_at_ms, s.activity_ms) == (T0, T0 + 102, T0 + 102)
    assert s.trace_status == "available"
    assert s.variant == "order.placed"


def test_trace_ids_list_the_first_trace_first(tmp_path):
    """A flow over several traces lists them by when each was first seen, so the first (the
    one a single link opens) is the trace the flow began in, not the lowest id."""
    store = new_store(tmp_path)
    first = {**ev("e1", "order.placed", flow="f1", ts=T0), "trace_id": "f" * 32}
    second = {**ev("e2", "payment.captured", flow="f1", cause="e1", offset=1, ts=T0 + 10),
              "trace_id": "a" * 32}
    late = {**ev("e3", "order.shipped", flow="f1", cause="e2", offset=2, ts=T0 + 20),
            "trace_id": "0" * 32}
    # a consumer span of a third trace, which began before the event that names it
    span = {**consumer(late, "shipping", start_ms=T0 + 5), "trace_id": "0" * 32}
    put(store, [late, second, first], [span])
    s = summarize(*load_flows(store)["f1"], tracing_active=True, untraced_grace_ms=0,
                  now_ms=T0)
    assert json.loads(s.trace_ids) == ["f" * 32, "0" * 32, "a" * 32]


def test_activity_is_bus_time_capped_by_observation(tmp_path):
    """A backlog read an hour late is idle since its bus time; a clock running ahead is capped
    by when the collector read the record."""
    store = new_store(tmp_path)
    hour = 3_600_000
    put(store, [ev("old1", "order.placed", flow="late", ts=T0, observed=T0 + hour),
                ev("old2", "payment.authorized", flow="late", cause="old1", offset=1,
                   ts=T0 + 10, observed=T0 + hour + 5),
                ev("fut", "order.placed", flow="ahead", offset=2, ts=T0 + hour,
                   observed=T0 + 20)], [])
    flows = load_flows(store)
    late = summarize(*flows["late"], tracing_active=False, untraced_grace_ms=0,
                     now_ms=T0 + hour + 10)
    ahead = summarize(*flows["ahead"], tracing_active=False, untraced_grace_ms=0,
                      now_ms=T0 + hour + 10)
    assert (late.last_seen_at_ms, late.activity_ms) == (T0 + 10, T0 + 10)
    assert (ahead.last_seen_at_ms, ahead.activity_ms) == (T0 + hour, T0 + 20)


def test_trace_status(tmp_path):
    """none without trace context, pending within the grace time, unavailable after it,
    unsampled when no event of the flow was sampled (one sampled event is enough to wait)."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "a.happened", flow="f1", traced=False),
                ev("e2", "a.happened", flow="f2", offset=1, observed=T0),
                ev("e3", "a.happened", flow="f3", offset=2, observed=T0, sampled=False),
                ev("e4", "a.happened", flow="f4", offset=3, observed=T0, sampled=False),
                ev("e5", "b.happened", flow="f4", offset=4, observed=T0, cause="e4")])
    flows = load_flows(store)

    def ts(fid, now, active=True):
        return summarize(*flows[fid], tracing_active=active, untraced_grace_ms=1000,
                         now_ms=now).trace_status

    assert ts("f1", T0) == "none"
    assert ts("f2", T0 + 999) == "pending"
    assert ts("f2", T0 + 1000) == "unavailable"
    assert ts("f2", T0, active=False) == "unavailable"
    assert (ts("f3", T0), ts("f3", T0 + 10**9), ts("f3", T0, active=False)) == (
        "unsampled", "unsampled", "unsampled")
    assert (ts("f4", T0), ts("f4", T0 + 1000)) == ("pending", "unavailable")


def _summary(leaf_types, *, failed=False, activity=T0):
    from choreoscope.collector.reconstruct.flows import FlowSummary

    return FlowSummary("f1", T0, T0, activity, 1, "[]", "[]", "[]", "", failed,
                       [(f"e{i}", t, None, None) for i, t in enumerate(leaf_types)], "none")


def test_status_first_match_wins():
    """failed beats stuck beats completed beats in_progress."""
    terminal = {"customer.notified"}.__contains__
    done = _summary(["customer.notified"])
    waiting = _summary(["customer.notified", "payment.authorized"])
    assert status(done, dead_outbox=False, stuck=False, is_terminal=terminal) == "completed"
    assert status(waiting, dead_outbox=False, stuck=False, is_terminal=terminal) == "in_progress"
    assert status(waiting, dead_outbox=False, stuck=True, is_terminal=terminal) == "stuck"
    assert status(waiting, dead_outbox=True, stuck=True, is_terminal=terminal) == "failed"
    failed = _summary(["customer.notified"], failed=True)
    assert status(failed, dead_outbox=False, stuck=False, is_terminal=terminal) == "failed"


def test_stuck_leaves_use_idle_time_and_type_overrides():
    """Only non-terminal leaves idle for at least their type's stuck-after are stuck."""
    terminal = {"customer.notified"}.__contains__
    s = _summary(["customer.notified", "payment.authorized", "order.placed"], activity=T0)
    after = {"order.placed": 5_000.0}.get
    stuck = stuck_leaves(s, terminal, lambda t: after(t, 60_000.0), T0 + 5_000)
    assert [leaf[1] for leaf in stuck] == ["order.placed"]
    stuck = stuck_leaves(s, terminal, lambda t: after(t, 60_000.0), T0 + 60_000)
    assert [leaf[1] for leaf in stuck] == ["payment.authorized", "order.placed"]


def test_flow_of_one_event_without_id():
    """An event without id is a node named by its bus position."""
    from choreoscope.collector.reconstruct.load import EventRow

    row = EventRow("t/0/4", None, None, None, None, None, None, None, None, None, None, T0, "t",
                   0, 4, '["missing_id"]')
    dag = causal_dag(Flow("t/0/4", [row]))
    assert list(dag.nodes) == ["t/0/4"]
    assert variant(dag) == "?"


def test_json_list_matches_json_dumps():
    """The fast JSON list writer gives exactly what json.dumps gives."""
    from choreoscope.collector.reconstruct.flows import json_list

    for items in ([], ["a"], ['q"uote', "é", "back\\slash\n", "\u2028"]):
        assert json_list(items) == json.dumps(items)
