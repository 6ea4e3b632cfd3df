"""A flow is stuck when a leaf of a type other flows follow waited longer than stuck-after."""

from __future__ import annotations

from choreoscope.collector.detect import stuck_flow
from choreoscope.collector.reconstruct.flows import stuck_leaves, summarize
from choreoscope.collector.reconstruct.terminal import TerminalTypes
from tests.collector.reconstruct.factory import T0, clean_flow, load_flows, new_store, put


def _stuck(store, now_ms, *, default_s=60.0, by_type=None):
    flows = load_flows(store)
    terminal = TerminalTypes()
    for _, dag in flows.values():
        terminal.learn(dag)
    by_type = by_type or {}
    found = []
    for flow, dag in flows.values():
        summary = summarize(flow, dag, tracing_active=True, untraced_grace_ms=0, now_ms=now_ms)
        leaves = stuck_leaves(summary, terminal.is_terminal,
                              lambda t: by_type.get(t, default_s) * 1000, now_ms)
        found += stuck_flow.detect(summary, leaves, now_ms=now_ms)
    return found


def _store(tmp_path):
    store = new_store(tmp_path)
    offsets: dict = {}
    for i in range(3):
        put(store, *clean_flow(i, offsets=offsets))
    put(store, *clean_flow(3, hops=2, offsets=offsets))  # stops after payment.authorized
    return store


def test_flow_waiting_after_a_followed_type_is_stuck(tmp_path):
    """f0000003 ends at payment.authorized, which other flows follow: stuck after 60 s."""
    store = _store(tmp_path)
    activity = T0 + 30 + 5 + 4  # last consumer span of f0000003 ends at ts + 2 ms + 2 ms
    assert _stuck(store, activity + 59_999) == []
    [a] = _stuck(store, activity + 60_000)
    assert (a.kind, a.key, a.event_id, a.subject, a.service, a.correlation_id) == (
        "stuck_flow", "f0000003:e0000003-1", "e0000003-1", "ord_3", "payments", "f0000003")
    assert a.extra["type"] == "payment.authorized"
    assert a.extra["last_activity_ms"] == activity


def test_per_type_stuck_after(tmp_path):
    """A per-type override replaces the default for leaves of that type."""
    store = _store(tmp_path)
    activity = T0 + 39
    assert [a.key for a in _stuck(store, activity + 10_000,
                                  by_type={"payment.authorized": 10})] == ["f0000003:e0000003-1"]
    assert _stuck(store, activity + 10**6, by_type={"payment.authorized": 10**4}) == []


def test_no_stuck_leaves_no_anomaly():
    """Without stuck leaves the detector reports nothing."""
    assert stuck_flow.detect(None, [], now_ms=T0) == []  # type: ignore[arg-type]


def test_clean_traffic_is_never_stuck(clean_run):
    """1,000 complete flows are not stuck, however late it is."""
    _, flows = clean_run
    terminal = TerminalTypes()
    for _, dag in flows.values():
        terminal.learn(dag)
    now = T0 + 10**9
    for flow, dag in flows.values():
        summary = summarize(flow, dag, tracing_active=True, untraced_grace_ms=0, now_ms=now)
        assert stuck_leaves(summary, terminal.is_terminal, lambda t: 60_000, now) == []


def test_a_flow_with_two_stuck_leaves_names_the_latest_and_lists_both():
    """Leaves come in causal then bus order (`flows.stuck_leaves`): the anomaly names the
    latest, whose idle time is the flow's, and lists every stuck leaf."""
    from choreoscope.collector.reconstruct.flows import FlowSummary

    summary = FlowSummary(
        flow_id="f1", started_at_ms=T0, last_seen_at_ms=T0 + 50, activity_ms=T0 + 50,
        event_count=3, services="[]", event_types="[]", trace_ids="[]", variant="",
        failed=False, leaves=[], trace_status="none")
    stuck = [("e2", "payment.authorized", "ord_1", "payments"),
             ("e3", "stock.reserved", "ord_1", "inventory")]
    [a] = stuck_flow.detect(summary, stuck, now_ms=T0 + 90_050)
    assert (a.key, a.event_id, a.service, a.extra["type"], a.extra["idle_s"]) == (
        "f1:e3", "e3", "inventory", "stock.reserved", 90.0)
    assert a.extra["leaves"] == [{"event_id": "e2", "type": "payment.authorized"},
                                 {"event_id": "e3", "type": "stock.reserved"}]
    assert a.detail == "flow f1 waits after stock.reserved e3: nothing happened for 90s"
