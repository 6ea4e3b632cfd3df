"""Out-of-order: causal (processing and bus order), sequence and time, naming the late event."""

from __future__ import annotations

from choreoscope.collector.detect import out_of_order
from choreoscope.collector.reconstruct.load import raw_connection
from choreoscope.collector.reconstruct.order import processed_by_group_subject
from tests.collector.reconstruct.factory import T0, consumer, ev, load_flows, new_store, put


def _processing(store, skew_s=1.0):
    with raw_connection(store) as raw:
        return list(out_of_order.detect_processing(
            processed_by_group_subject(raw, store.dialect), skew_s))


def test_group_processing_effect_before_cause(tmp_path):
    """audit processed e2 before its cause e1: causal, naming e1 as the late event."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", topic="orders", subject="ord_1", ts=T0)
    e2 = ev("e2", "payment.authorized", flow="f1", topic="payments", source="payments",
            subject="ord_1", cause="e1", ts=T0 + 5)
    put(store, [e1, e2], [consumer(e2, "audit", start_ms=T0 + 10),
                          consumer(e1, "audit", start_ms=T0 + 20),
                          consumer(e1, "payments", start_ms=T0 + 2)])
    flow, dag = load_flows(store)["f1"]
    [a] = out_of_order.detect(flow, dag)
    assert (a.kind, a.subkind, a.key, a.event_id, a.subject, a.group, a.service,
            a.correlation_id) == ("out_of_order", "causal", "causal:audit:e1:e2", "e1", "ord_1",
                                  "audit", "audit", "f1")
    assert [x["event_id"] for x in a.extra["expected"]] == ["e1", "e2"]
    assert [(x["event_id"], x["processed_at_us"]) for x in a.extra["observed"]] == [
        ("e2", (T0 + 10) * 1000), ("e1", (T0 + 20) * 1000)]
    assert a.detail == ("group audit processed payment.authorized e2 before its cause "
                        "order.placed e1")


def test_a_group_is_judged_by_its_first_processing_of_each_event(tmp_path):
    """audit processed the effect e2, then its cause e1, then e2 again (a redelivery): the
    first processing of e2 came before e1, which is the anomaly; judged by the last, the
    group would look in order."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", topic="orders", subject="ord_1", ts=T0)
    e2 = ev("e2", "payment.authorized", flow="f1", topic="payments", source="payments",
            subject="ord_1", cause="e1", ts=T0 + 5)
    put(store, [e1, e2], [consumer(e2, "audit", start_ms=T0 + 10, span_id="00000000000000c1"),
                          consumer(e1, "audit", start_ms=T0 + 20),
                          consumer(e2, "audit", start_ms=T0 + 30, span_id="00000000000000c2")])
    flow, dag = load_flows(store)["f1"]
    [a] = out_of_order.detect(flow, dag)
    assert (a.subkind, a.key) == ("causal", "causal:audit:e1:e2")
    assert [(x["event_id"], x["processed_at_us"]) for x in a.extra["observed"]] == [
        ("e2", (T0 + 10) * 1000), ("e1", (T0 + 20) * 1000)]


def test_effect_on_the_bus_before_cause(tmp_path):
    """e2 sits at a lower offset than its cause e1 in the same partition: causal (bus)."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", offset=1, subject="ord_1", ts=T0 + 5)
    e2 = ev("e2", "order.amended", flow="f1", offset=0, subject="ord_1", cause="e1", ts=T0 + 6)
    put(store, [e1, e2])
    flow, dag = load_flows(store)["f1"]
    [a] = out_of_order.detect(flow, dag)
    assert (a.subkind, a.key, a.event_id, a.group) == ("causal", "causal:bus:e1:e2", "e1", None)
    assert a.extra["order"] == "bus"
    assert [(x["event_id"], x["offset"]) for x in a.extra["observed"]] == [("e2", 0), ("e1", 1)]


def test_bus_order_across_topics_uses_broker_timestamps(tmp_path):
    """Across topics the effect is early only when its broker timestamp is smaller."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", topic="orders", ts=T0 + 5)
    e2 = ev("e2", "payment.authorized", flow="f1", topic="payments", cause="e1", ts=T0 + 4)
    e3 = ev("e3", "payment.authorized", flow="f2", topic="payments", cause="e4", ts=T0 + 5)
    e4 = ev("e4", "order.placed", flow="f2", topic="orders", offset=1, ts=T0 + 5)
    put(store, [e1, e2, e3, e4])
    flows = load_flows(store)
    assert [a.key for a in out_of_order.detect(*flows["f1"])] == ["causal:bus:e1:e2"]
    assert out_of_order.detect(*flows["f2"]) == []


def test_bus_order_across_topics_tolerates_the_skew_between_producer_clocks(tmp_path):
    """A payment service whose clock runs 400 ms behind stamps its effect before the order it
    consumed: within the 1 s skew that is no anomaly; 1.5 s ahead is one. In one partition
    offsets decide, whatever the clocks."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f1", topic="orders", ts=T0 + 1000),
                ev("e2", "payment.authorized", flow="f1", topic="payments", cause="e1",
                   ts=T0 + 600),
                ev("e3", "order.placed", flow="f2", topic="orders", offset=1, ts=T0 + 5000),
                ev("e4", "payment.authorized", flow="f2", topic="payments", offset=1,
                   cause="e3", ts=T0 + 3500),
                ev("e5", "order.placed", flow="f3", topic="orders", offset=3, ts=T0),
                ev("e6", "order.amended", flow="f3", topic="orders", offset=2, cause="e5",
                   ts=T0 + 100)])
    flows = load_flows(store)
    assert {f: [a.key for a in out_of_order.detect(*flows[f], skew_s=1.0)]
            for f in ("f1", "f2", "f3")} == {
        "f1": [], "f2": ["causal:bus:e3:e4"], "f3": ["causal:bus:e5:e6"]}


def test_lower_sequence_after_higher_one(tmp_path):
    """billing processed sequence 1 after sequence 2 of orders/ord_1: e2 arrived late."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.amended", flow="f1", offset=0, subject="ord_1", sequence=2)
    e2 = ev("e2", "order.placed", flow="f1", offset=1, subject="ord_1", sequence=1)
    e3 = ev("e3", "order.placed", flow="f1", offset=2, subject="ord_1", sequence=1,
            source="legacy")  # another source: its own sequence
    put(store, [e1, e2, e3], [consumer(e1, "billing", start_ms=T0 + 10),
                              consumer(e2, "billing", start_ms=T0 + 20),
                              consumer(e3, "billing", start_ms=T0 + 30),
                              consumer(e2, "audit", start_ms=T0 + 5),
                              consumer(e1, "audit", start_ms=T0 + 6)])
    [a] = _processing(store)
    assert (a.kind, a.subkind, a.key, a.event_id, a.subject, a.group, a.correlation_id) == (
        "out_of_order", "sequence", "sequence:billing:e2", "e2", "ord_1", "billing", "f1")
    assert [(x["event_id"], x["sequence"]) for x in a.extra["observed"]] == [("e1", 2), ("e2", 1)]
    assert [x["event_id"] for x in a.extra["expected"]] == ["e2", "e1"]


def test_older_time_after_newer_beyond_skew(tmp_path):
    """An event 4 s older than one already processed is late; one 0.5 s older is within skew."""
    store = new_store(tmp_path)
    new = ev("e1", "order.amended", flow="f1", offset=0, subject="ord_1", ts=T0 + 5000)
    old = ev("e2", "order.placed", flow="f1", offset=1, subject="ord_1", ts=T0 + 1000)
    near = ev("e3", "order.noted", flow="f1", offset=2, subject="ord_1", ts=T0 + 4500)
    put(store, [new, old, near], [consumer(new, "crm", start_ms=T0 + 6000),
                                  consumer(old, "crm", start_ms=T0 + 6001),
                                  consumer(near, "crm", start_ms=T0 + 6002)])
    [a] = _processing(store)
    assert (a.subkind, a.key, a.event_id, a.group) == ("time", "time:crm:e2", "e2", "crm")
    assert [(x["event_id"], x["time_ms"]) for x in a.extra["observed"]] == [
        ("e1", T0 + 5000), ("e2", T0 + 1000)]
    assert [a.key for a in _processing(store, skew_s=4.0)] == []


def test_redelivery_is_not_out_of_order(tmp_path):
    """Processing e1 again after e2 is a duplicate delivery, not a sequence problem."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", offset=0, subject="ord_1", sequence=1)
    e2 = ev("e2", "order.amended", flow="f1", offset=1, subject="ord_1", sequence=2)
    put(store, [e1, e2], [consumer(e1, "billing", start_ms=T0 + 10),
                          consumer(e2, "billing", start_ms=T0 + 20),
                          consumer(e1, "billing", start_ms=T0 + 30, span_id="c" * 16)])
    assert _processing(store) == []


def test_clean_traffic_is_in_order(clean_run):
    """1,000 clean flows give no out-of-order anomaly of any subkind."""
    store, flows = clean_run
    assert [a for flow, dag in flows.values() for a in out_of_order.detect(flow, dag)] == []
    assert _processing(store) == []
