"""Duplicates: one event id at two offsets (publish), or processed twice by a group (delivery)."""

from __future__ import annotations

from choreoscope.collector.detect import duplicate
from tests.collector.reconstruct.factory import T0, consumer, ev, load_flows, new_store, put


def test_publish_duplicate_names_every_record(tmp_path):
    """The same event id at offsets 3 and 9 is one publish duplicate listing both records."""
    store = new_store(tmp_path)
    a = ev("e1", "order.placed", flow="f1", offset=3, subject="ord_1")
    b = ev("e1", "order.placed", flow="f1", offset=9, subject="ord_1", ts=T0 + 40)
    put(store, [a, b])
    flow, dag = load_flows(store)["f1"]
    [d] = duplicate.detect(flow, dag)
    assert (d.kind, d.subkind, d.key, d.event_id, d.subject, d.service, d.group) == (
        "duplicate", "publish", "publish:e1", "e1", "ord_1", "orders", None)
    assert [(r["offset"], r["broker_ts_ms"]) for r in d.extra["records"]] == [(3, T0), (9, T0 + 40)]
    assert d.detail == "order.placed e1 was published 2 times"


def test_delivery_duplicate_is_per_group(tmp_path):
    """Two processings of e1 by `billing` are a delivery duplicate; one by `audit` is not."""
    store = new_store(tmp_path)
    e = ev("e1", "order.placed", flow="f1", subject="ord_1")
    put(store, [e], [consumer(e, "billing", start_ms=T0 + 5),
                     consumer(e, "billing", start_ms=T0 + 900, span_id="b" * 16),
                     consumer(e, "audit", start_ms=T0 + 6)])
    flow, dag = load_flows(store)["f1"]
    [d] = duplicate.detect(flow, dag)
    assert (d.subkind, d.key, d.event_id, d.group, d.service) == (
        "delivery", "delivery:billing:e1", "e1", "billing", "billing")
    assert [p["start_us"] for p in d.extra["processings"]] == [(T0 + 5) * 1000, (T0 + 900) * 1000]


def test_distinct_events_are_not_duplicates(tmp_path):
    """Two events with different ids at two offsets are not duplicates."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f1", offset=0),
                ev("e2", "order.placed", flow="f1", offset=1)])
    flow, dag = load_flows(store)["f1"]
    assert duplicate.detect(flow, dag) == []


def test_clean_traffic_has_no_duplicate(clean_run):
    """1,000 clean flows give no duplicate."""
    _, flows = clean_run
    assert [a for flow, dag in flows.values() for a in duplicate.detect(flow, dag)] == []


def _across(store):
    from choreoscope.collector.reconstruct.load import raw_connection

    with raw_connection(store) as raw:
        return duplicate.detect_across_flows(duplicate.load_repeated(raw, store.dialect))


def test_copies_with_different_correlation_ids_are_one_publish_duplicate(tmp_path):
    """e1 sent again under another correlation id (so in another flow) is a publish duplicate,
    reported once, under the flow of its first copy, naming both flows."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f-b", offset=9, subject="ord_1", ts=T0 + 40),
                ev("e1", "order.placed", flow="f-a", offset=3, subject="ord_1"),
                ev("e2", "order.placed", flow="f-a", offset=4),
                ev("e3", "order.placed", flow="f-c", offset=5),
                ev("e3", "order.placed", flow="f-c", offset=6)])
    [d] = _across(store)
    assert (d.kind, d.subkind, d.key, d.correlation_id, d.event_id, d.subject, d.service) == (
        "duplicate", "publish", "publish_across_flows:e1", "f-a", "e1", "ord_1", "orders")
    assert d.detail == "order.placed e1 was published 2 times, in 2 flows: f-a, f-b"
    assert d.extra["flows"] == ["f-a", "f-b"]
    assert [(r["flow_id"], r["offset"]) for r in d.extra["records"]] == [("f-a", 3), ("f-b", 9)]


def test_clean_traffic_has_no_duplicate_across_flows(clean_run):
    """1,000 clean flows give no duplicate across flows."""
    store, _ = clean_run
    assert _across(store) == []
