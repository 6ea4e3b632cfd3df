"""The flows queries on SQLite and PostgreSQL, against rows written as the collector writes them."""

from __future__ import annotations

from pathlib import Path

from choreoscope.collector.query import (
    causal_order,
    count_flows_by_status,
    count_variants,
    events_per_minute,
    get_flow,
    list_flows,
    resolve_flow_id,
    search_flows,
)
from choreoscope.collector.store import Store
from tests.collector.query import expected
from tests.collector.query._data import T0


def test_list_flows_exact(store: Store) -> None:
    """Every flow comes back in the DESIGN shape, most recently active first."""
    assert list_flows(store) == expected.FLOWS


def test_list_flows_status_and_limit(store: Store) -> None:
    """`status` filters exactly and `limit` cuts the list."""
    assert list_flows(store, status="stuck") == [expected.FLOW_2]
    assert list_flows(store, limit=2) == [expected.FLOW_3, expected.FLOW_2]
    assert list_flows(store, limit=0) == []
    assert list_flows(store, status="in_progress") == []


def test_anomaly_count_is_live(store: Store) -> None:
    """A flow's anomaly_count is the number of its stored anomalies, not a stale column."""
    counts = {f["correlation_id"]: f["anomaly_count"] for f in list_flows(store)}
    assert counts == {"ord-1": 1, "ord-2": 1, "ord-3": 2}


def test_search_filters(store: Store) -> None:
    """Each filter selects the flows it names, computed in SQL."""
    def ids(**filters: object) -> list[str]:
        return [f["correlation_id"] for f in search_flows(store, **filters)["flows"]]

    assert ids(event_type="payment.failed") == ["ord-3"]
    assert ids(event_type="order.placed") == ["ord-3", "ord-2", "ord-1"]
    assert ids(service="shipping") == ["ord-1"]
    assert ids(service="audit") == []  # its span processed no event of any flow
    assert ids(subject="ord_2") == ["ord-2"]
    assert ids(correlation_id="RD-") == ["ord-3", "ord-2", "ord-1"]
    assert ids(correlation_id="d-1") == ["ord-1"]
    assert ids(correlation_id="%") == []
    assert ids(correlation_id="_") == []
    assert ids(variant="order.placed") == ["ord-2"]
    assert ids(anomaly_kind="stuck_outbox") == ["ord-3"]
    assert ids(since_ms=T0 + 60_000) == ["ord-3", "ord-2"]
    assert ids(until_ms=T0 + 60_000) == ["ord-2", "ord-1"]
    assert ids(since_ms=T0 + 1000, until_ms=T0 + 100_000) == ["ord-2"]
    assert ids(status="completed", service="payments") == ["ord-1"]


def test_search_pages_with_total(store: Store) -> None:
    """A page carries the total of all matches, independent of offset and limit."""
    page = search_flows(store, service="payments", offset=1, limit=1)
    assert page == {"total": 2, "offset": 1, "limit": 1, "flows": [expected.FLOW_1]}
    assert search_flows(store, offset=5)["flows"] == []


def test_service_filter_from_consumer_spans(store: Store) -> None:
    """A service that only processed events (a CONSUMER span) still finds its flows."""
    from choreoscope.collector.store.schema import events

    with store.engine.begin() as conn:  # ord-3's events no longer name payments as a source
        conn.execute(events.update().where(events.c.flow_id == "ord-3").values(source="orders"))
    assert [f["correlation_id"] for f in search_flows(store, service="payments")["flows"]] == [
        "ord-3", "ord-1"]


def test_counts_per_status_and_variant(store: Store) -> None:
    """Counts per status include every status; variants come rarest first."""
    assert count_flows_by_status(store) == {"in_progress": 0, "completed": 1, "stuck": 1,
                                            "failed": 1}
    assert count_flows_by_status(store, event_type="payment.failed", status="x") == {
        "in_progress": 0, "completed": 0, "stuck": 0, "failed": 1}
    assert count_variants(store) == [
        {"variant": "order.placed", "count": 1},
        {"variant": "order.placed > payment.failed", "count": 1},
        {"variant": "order.placed > payment.succeeded > order.shipped", "count": 1},
    ]


def test_events_per_minute(store: Store) -> None:
    """Records are counted per broker-time minute, in time order, within the window."""
    assert events_per_minute(store) == [
        {"minute": "2025-11-24T16:00:00.000Z", "count": 4},
        {"minute": "2025-11-24T16:01:00.000Z", "count": 1},
        {"minute": "2025-11-24T16:02:00.000Z", "count": 2},
        {"minute": "2025-11-24T16:03:00.000Z", "count": 1},
    ]
    assert events_per_minute(store, since_ms=T0 + 60_000, until_ms=T0 + 120_000) == [
        {"minute": "2025-11-24T16:01:00.000Z", "count": 1}]


def test_get_flow_detail(store: Store) -> None:
    """A flow's detail has every record (duplicates marked), its spans and its anomalies."""
    flow = get_flow(store, "ord-1")
    assert flow is not None
    assert {k: v for k, v in flow.items()
            if k not in ("events", "spans", "anomalies")} == expected.FLOW_1
    assert [(e["id"], e["topic"], e["offset"], e["duplicate"]) for e in flow["events"]] == \
        expected.FLOW_1_RECORDS
    assert flow["events"][0] == expected.FIRST_EVENT
    assert [s["span_id"] for s in flow["spans"]] == ["a" * 16, "b" * 16]
    assert flow["spans"][1] == expected.CONSUMER_SPAN_1
    assert flow["anomalies"] == [expected.ANOMALY_DUPLICATE]


def test_get_flow_failed_with_problems(store: Store) -> None:
    """A failed flow shows its error span, decoding problems and both anomalies."""
    flow = get_flow(store, "ord-3")
    assert flow is not None
    assert flow["events"][1]["problems"] == ["type_not_past_tense"]
    assert [(s["status"], s["error_type"]) for s in flow["spans"]] == [("error", "ValueError")]
    assert flow["anomalies"] == [expected.ANOMALY_FAILED, expected.ANOMALY_OUTBOX]


def test_get_flow_not_yet_reconstructed(store: Store) -> None:
    """Events stored before analysis ran still give a flow, built from the events."""
    flow = get_flow(store, "ord-4")
    assert flow is not None
    assert {k: v for k, v in flow.items() if k not in ("events", "spans", "anomalies")} == {
        "correlation_id": "ord-4", "status": "in_progress",
        "started_at": "2025-11-24T16:03:00.000Z", "last_seen_at": "2025-11-24T16:03:00.000Z",
        "duration_ms": 0, "event_count": 1, "services": ["orders"],
        "event_types": ["order.placed"], "trace_ids": [], "anomaly_count": 0,
        "variant": "order.placed", "trace_status": None,
    }
    assert [e["id"] for e in flow["events"]] == ["e7"]


def test_get_flow_unknown(store: Store) -> None:
    """An unknown correlation id gives None."""
    assert get_flow(store, "nope") is None


def _rec(i: int, event_id: str | None, cause: str | None, at: int) -> dict[str, object]:
    return {"event_id": event_id, "causation_id": cause, "broker_ts_ms": at,
            "observed_at_ms": at, "topic": "t", "partition": 0, "offset": i}


def test_causal_order_breaks_cycles() -> None:
    """A causation cycle in bad data still yields every record once, earliest first."""
    records = [_rec(0, "a", "b", 10), _rec(1, "b", "a", 20), _rec(2, "c", "a", 5),
               _rec(3, None, None, 1)]
    order = [r["offset"] for r in causal_order(records)]
    assert order == [3, 0, 2, 1]


def test_causal_order_effects_after_causes() -> None:
    """An effect read from the bus before its cause is placed after it; others keep bus order."""
    records = [_rec(0, "x", None, 50), _rec(1, "y", "x", 10), _rec(2, "z", None, 20),
               _rec(3, "w", "self", 30), _rec(4, "v", "v", 40)]
    assert [r["event_id"] for r in causal_order(records)] == ["z", "w", "v", "x", "y"]


def test_resolve_flow_id(store: Store) -> None:
    """A correlation id, an event id or a trace id leads to its flow; anything else to None."""
    assert resolve_flow_id(store, "ord-2") == "ord-2"
    assert resolve_flow_id(store, "ord-4") == "ord-4"  # stored events, no flow row yet
    assert resolve_flow_id(store, "e6") == "ord-3"
    assert resolve_flow_id(store, "1" * 32) == "ord-1"
    assert resolve_flow_id(store, "nope") is None
    assert resolve_flow_id(store, "' OR 1=1 --") is None
    assert resolve_flow_id(store, "ord-1\x00") is None



def test_resolve_flow_id_of_an_over_long_id(store: Store) -> None:
    """A correlation or event id longer than its column was stored cut, with a hash of the
    whole (ingest/rows.py): the whole id, as a user copies it from their logs, finds it."""
    from sqlalchemy import update

    from choreoscope.collector.store.schema import events, flows
    from choreoscope.collector.store.text import cut_id

    flow_id, event_id = "c" * 200 + "-1", "e" * 200 + "-6"
    with store.engine.begin() as conn:
        conn.execute(update(flows).where(flows.c.correlation_id == "ord-2")
                     .values(correlation_id=cut_id(flow_id, 128)))
        conn.execute(update(events).where(events.c.event_id == "e6")
                     .values(event_id=cut_id(event_id, 128)))
    assert resolve_flow_id(store, flow_id) == cut_id(flow_id, 128)
    assert resolve_flow_id(store, event_id) == "ord-3"
    assert resolve_flow_id(store, "c" * 200 + "-2") is None


def test_search_by_an_over_long_correlation_id(store: Store) -> None:
    """The dashboard's search box takes the whole over-long id as the user copied it: it
    names the flow stored under the cut id, and only that one; a start of it still matches as
    a substring."""
    from sqlalchemy import update

    from choreoscope.collector.store.schema import flows
    from choreoscope.collector.store.text import cut_id

    long_id = "c" * 200 + "-1"
    with store.engine.begin() as conn:
        conn.execute(update(flows).where(flows.c.correlation_id == "ord-2")
                     .values(correlation_id=cut_id(long_id, 128)))

    def ids(text: str) -> list[str]:
        return [f["correlation_id"] for f in search_flows(store, correlation_id=text)["flows"]]

    assert ids(long_id) == [cut_id(long_id, 128)]
    assert ids("c" * 200 + "-2") == []
    assert ids("C" * 40) == [cut_id(long_id, 128)]


def test_a_flow_not_yet_analysed_counts_its_events_as_analysis_will(tmp_path: Path) -> None:
    """Before the first analysis, a flow's summary counts what the analysis will count: each
    distinct event id once, and each record without an id on its own."""
    from choreoscope.collector.analyze import analyze
    from choreoscope.collector.store import schema

    def record(offset: int, event_id: str | None) -> dict[str, object]:
        return {"topic": "orders", "partition": 0, "offset": offset, "event_id": event_id,
                "type": "order.placed", "source": "orders", "flow_id": "c1",
                "correlation_id": "c1", "broker_ts_ms": T0 + offset,
                "observed_at_ms": T0 + offset, "envelope": "binary", "data_truncated": False}

    store = Store(f"sqlite:///{tmp_path / 's.db'}").create()
    with store.engine.begin() as conn:  # a1 twice, then two records without an id
        store.insert_ignore(conn, schema.events, [record(0, "a1"), record(1, "a1"),
                                                  record(2, None), record(3, None)])
    before = get_flow(store, "c1")
    analyze(store)
    after = get_flow(store, "c1")
    assert before is not None and after is not None
    assert before["status"] == "in_progress"  # no row yet: built from the events
    assert (before["event_count"], len(before["events"])) == (3, 4)
    assert (after["event_count"], len(after["events"])) == (3, 4)
    store.dispose()


def test_a_flow_shows_only_its_own_spans_of_a_shared_trace(store: Store) -> None:
    """One request publishing two orders puts two flows in one trace. Each flow's detail
    shows the request's span and its own sends and handlers (and what runs under them), not
    the other flow's, whose failing handler would read as its own failure. A send naming an
    event not on the bus (an outbox row not relayed) stays with the trace's flows."""
    from choreoscope.collector.store.schema import events, spans
    from tests.collector.query._data import event, span

    shared = "5" * 32
    at = T0 + 300_000
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [
            event("orders", 10, "n1", "order.placed", "orders", "ord-n", at=at, trace=shared),
            event("orders", 11, "f1", "order.placed", "orders", "ord-f", at=at, trace=shared)])
        conn.execute(spans.insert(), [
            span(shared, "1" * 16, "POST /checkout", "server", "web", at * 1000),
            span(shared, "2" * 16, "send orders", "producer", "web", at * 1000 + 10,
                 parent="1" * 16, message_id="n1"),
            span(shared, "3" * 16, "send orders", "producer", "web", at * 1000 + 20,
                 parent="1" * 16, message_id="f1"),
            span(shared, "4" * 16, "process orders", "consumer", "payments", at * 1000 + 30,
                 parent="2" * 16, message_id="n1", group="payments"),
            span(shared, "5" * 16, "process orders", "consumer", "payments", at * 1000 + 40,
                 parent="3" * 16, message_id="f1", group="payments", status="error"),
            span(shared, "6" * 16, "select orders", "client", "payments", at * 1000 + 50,
                 parent="5" * 16),
            span(shared, "7" * 16, "send orders", "producer", "web", at * 1000 + 60,
                 parent="1" * 16, message_id="outbox-row-9")])

    def shown(cid: str) -> list[str]:
        flow = get_flow(store, cid)
        assert flow is not None
        return [s["span_id"][0] for s in flow["spans"]]

    assert shown("ord-n") == ["1", "2", "4", "7"]
    assert shown("ord-f") == ["1", "3", "5", "6", "7"]


def test_the_first_flow_of_a_shared_trace_is_the_first_published(store: Store) -> None:
    """Records of one batch share the collector's time: the flow whose event reached the bus
    first is the trace's first, for `flows_of_trace` and `resolve_flow_id` alike."""
    from choreoscope.collector.query.flows import flows_of_trace
    from choreoscope.collector.store.schema import events
    from tests.collector.query._data import event

    shared = "6" * 32
    later = event("orders", 20, "x1", "order.placed", "orders", "ord-a", at=T0 + 9, trace=shared)
    first = event("orders", 21, "y1", "order.placed", "orders", "ord-b", at=T0 + 1, trace=shared)
    later["observed_at_ms"] = first["observed_at_ms"] = T0 + 50  # one batch
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [later, first])
    assert flows_of_trace(store, shared.upper()) == ["ord-b", "ord-a"]
    assert resolve_flow_id(store, shared) == "ord-b"
