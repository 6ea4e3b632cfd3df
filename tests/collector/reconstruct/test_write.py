"""Writing results: only changed flows are rewritten, stale flows and edges are removed."""

from __future__ import annotations

from sqlalchemy import select

from choreoscope.collector.detect.anomaly import Anomaly, record
from choreoscope.collector.reconstruct.flows import DeadRow, FlowSummary
from choreoscope.collector.reconstruct.write import dead_outbox_flows, write_edges, write_flows
from choreoscope.collector.store.schema import flows, graph_edges
from tests.collector.reconstruct.factory import T0, dead_outbox, ev, new_store, put


def _summary(fid: str, variant: str = "a.happened") -> FlowSummary:
    return FlowSummary(fid, T0, T0 + 5, T0 + 5, 1, '["svc"]', '["a.happened"]', "[]", variant,
                       False, [("e1", "a.happened", None, "svc")], "none")


def test_only_changed_flows_are_rewritten_and_gone_ones_removed(tmp_path):
    """A second write with one flow changed and one gone rewrites one and removes one."""
    store = new_store(tmp_path)
    assert write_flows(store, [_summary("a"), _summary("b"), _summary("c")],
                       ["completed"] * 3, {}, T0) == (3, 0)
    assert write_flows(store, [_summary("a"), _summary("c", "a.happened > b.happened")],
                       ["completed", "completed"], {"a": 2}, T0 + 1) == (2, 1)
    with store.engine.connect() as conn:
        rows = {r.correlation_id: (r.anomaly_count, r.variant, r.updated_at_ms)
                for r in conn.execute(select(flows))}
    assert rows == {"a": (2, "a.happened", T0 + 1),
                    "c": (0, "a.happened > b.happened", T0 + 1)}
    assert write_flows(store, [_summary("a"), _summary("c", "a.happened > b.happened")],
                       ["completed", "completed"], {"a": 2}, T0 + 2) == (0, 0)


def test_a_pass_ending_after_a_newer_one_keeps_the_flows_it_did_not_see(tmp_path):
    """Two collectors analyse one store. Pass B read it later (flow x's first event had
    arrived) and wrote first; pass A, which read it before x existed, ends after. A must not
    delete x: only flows without a single stored event are gone."""
    store = new_store(tmp_path)
    put(store, [ev("a1", "a.happened", flow="a", offset=0),
                ev("x1", "a.happened", flow="x", offset=1, ts=T0 + 9)])
    write_flows(store, [_summary("a"), _summary("x"), _summary("pruned")],
                ["completed", "in_progress", "completed"], {}, T0 + 10)
    assert write_flows(store, [_summary("a")], ["completed"], {}, T0 + 5) == (0, 1)
    with store.engine.connect() as conn:
        assert sorted(r.correlation_id for r in conn.execute(select(flows))) == ["a", "x"]


def test_edges_no_longer_learned_are_removed(tmp_path):
    """Edges missing from the next write disappear; the others are updated."""
    store = new_store(tmp_path)

    def edge(src, dst, count):
        return {"source": src, "target": dst, "kind": "emits", "count": count, "p50_ms": None,
                "p95_ms": None, "anomaly_count": 0}

    write_edges(store, [edge("s", "a.happened", 1), edge("s", "b.happened", 1)])
    write_edges(store, [edge("s", "a.happened", 7)])
    with store.engine.connect() as conn:
        assert [(r.target, r.count) for r in conn.execute(select(graph_edges))] == [
            ("a.happened", 7)]


def test_dead_outbox_rows_name_their_flows(tmp_path):
    """Only rows with status dead and a correlation id count; bad JSON is ignored."""
    store = new_store(tmp_path)
    broken = dead_outbox("x", name="broken")
    broken["stuck"] = "{not json"
    put(store, outbox=[dead_outbox("f1"), broken])
    assert dead_outbox_flows(store) == {
        "f1": [DeadRow("r1", "order.placed", "orders-db", None, T0 - 90_000)]}


def test_dead_outbox_rows_no_longer_listed_still_name_their_flows(tmp_path):
    """A dead row the monitor once reported (its anomaly) keeps its flow failed after newer
    dead rows push it off the monitor's list."""
    store = new_store(tmp_path)
    with store.engine.begin() as conn:
        record(store, conn, [
            Anomaly(kind="stuck_outbox", key="shop:1", subkind="dead", detail="dead",
                    correlation_id="f-old", event_id="r0", service="shop",
                    extra={"type": "order.placed", "trace_id": "ab" * 16,
                           "created_at": "2023-11-14T21:23:20.000Z"}),
            Anomaly(kind="stuck_outbox", key="shop:2", subkind="age", detail="pending",
                    correlation_id="f-pending")], T0)
    put(store, outbox=[dead_outbox("f1")])
    assert dead_outbox_flows(store) == {
        "f-old": [DeadRow("r0", "order.placed", "shop", "ab" * 16, 1_700_000_000_000 - 3_000_000)],
        "f1": [DeadRow("r1", "order.placed", "orders-db", None, T0 - 90_000)]}


def test_a_dead_row_listed_and_recorded_is_taken_once_and_odd_extras_never_crash(tmp_path):
    """The monitor's list and its anomaly name the same row: one DeadRow. An anomaly whose
    extra is not what the monitor writes falls back to when it was detected."""
    store = new_store(tmp_path)
    with store.engine.begin() as conn:
        record(store, conn, [
            Anomaly(kind="stuck_outbox", key="orders-db:r1", subkind="dead", detail="dead",
                    correlation_id="f1", event_id="r1", service="orders-db"),
            Anomaly(kind="stuck_outbox", key="orders-db:r2", subkind="dead", detail="dead",
                    correlation_id="f2", event_id="r2",
                    extra={"type": 7, "trace_id": ["x"], "created_at": "yesterday"})], T0)
    put(store, outbox=[dead_outbox("f1")])
    assert dead_outbox_flows(store) == {
        "f1": [DeadRow("r1", None, "orders-db", None, T0)],
        "f2": [DeadRow("r2", None, None, None, T0)]}
