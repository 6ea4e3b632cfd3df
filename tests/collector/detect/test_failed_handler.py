"""A CONSUMER span with status ERROR is a failed handler, named by service, group and error."""

from __future__ import annotations

from choreoscope.collector.detect import failed_handler
from tests.collector.reconstruct.factory import T0, consumer, ev, load_flows, new_store, put


def test_error_span_is_reported_with_error_type(tmp_path):
    """A failed processing of e1 by payments names service, group and error type."""
    store = new_store(tmp_path)
    e = ev("e1", "order.placed", flow="f1", subject="ord_1")
    bad = consumer(e, "payments", start_ms=T0 + 5, status="error", error_type="ValueError",
                   service="payment-svc")
    put(store, [e], [bad, consumer(e, "audit", start_ms=T0 + 6)])
    flow, dag = load_flows(store)["f1"]
    [a] = failed_handler.detect(flow, dag)
    assert (a.kind, a.subkind, a.key, a.event_id, a.subject, a.service, a.group,
            a.correlation_id) == ("failed_handler", None, f"{bad['trace_id']}/{bad['span_id']}",
                                  "e1", "ord_1", "payment-svc", "payments", "f1")
    assert a.detail == ("payment-svc (group payments) failed handling order.placed e1: "
                        "ValueError: boom")


def test_error_on_a_producer_span_is_not_a_failed_handler(tmp_path):
    """Only CONSUMER spans count as handlers."""
    from tests.collector.reconstruct.factory import producer

    store = new_store(tmp_path)
    e = ev("e1", "order.placed", flow="f1")
    p = producer(e)
    p["status"] = "error"
    put(store, [e], [p])
    flow, dag = load_flows(store)["f1"]
    assert failed_handler.detect(flow, dag) == []


def test_clean_traffic_has_no_failed_handler(clean_run):
    """1,000 clean flows give no failed handler."""
    _, flows = clean_run
    assert [a for flow, dag in flows.values() for a in failed_handler.detect(flow, dag)] == []
