"""Envelope problems kept with events become one anomaly per record and problem code."""

from __future__ import annotations

from choreoscope.collector.detect import envelope
from tests.collector.reconstruct.factory import ev, load_flows, new_store, put


def test_one_anomaly_per_problem_code(tmp_path):
    """Each problem code of a record gives an anomaly whose subkind is the code."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.place", flow="f1", offset=7, subject="ord_1",
                   problems=["type_not_past_tense: order.place", "bad_traceparent: 00-xyz"]),
                ev("e2", "order.placed", flow="f1", offset=8)])
    flow, _ = load_flows(store)["f1"]
    found = envelope.detect(flow)
    assert [(a.kind, a.subkind, a.key, a.event_id, a.subject, a.correlation_id, a.detail)
            for a in found] == [
        ("envelope", "type_not_past_tense", "orders/0/7:type_not_past_tense", "e1", "ord_1", "f1",
         "orders/0/7: type_not_past_tense: order.place"),
        ("envelope", "bad_traceparent", "orders/0/7:bad_traceparent", "e1", "ord_1", "f1",
         "orders/0/7: bad_traceparent: 00-xyz"),
    ]


def test_record_without_id_is_reported_by_position(tmp_path):
    """A record with no event id is named by topic/partition/offset."""
    store = new_store(tmp_path)
    put(store, [ev(None, None, flow="orders/0/3", offset=3, problems=["no_envelope: x"])])
    flow, _ = load_flows(store)["orders/0/3"]
    [a] = envelope.detect(flow)
    assert (a.subkind, a.key, a.event_id) == ("no_envelope", "orders/0/3:no_envelope", None)


def test_unreadable_problems_text_is_one_problem():
    """Problems that are not a JSON list are reported as they are, never crash."""
    assert envelope.problem_codes("not json: at all") == [("not json", "not json: at all")]
    assert envelope.problem_codes('"missing_id"') == [("missing_id", "missing_id")]
    assert envelope.problem_codes('["missing_id", "missing_id"]') == [("missing_id", "missing_id")]
    assert envelope.problem_codes(None) == []


def test_clean_traffic_has_no_envelope_anomaly(clean_run):
    """1,000 clean flows give no envelope anomaly."""
    _, flows = clean_run
    assert [a for flow, _ in flows.values() for a in envelope.detect(flow)] == []
