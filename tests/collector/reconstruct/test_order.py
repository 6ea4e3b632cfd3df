"""Processing order per group (CONSUMER span starts) and bus order."""

from __future__ import annotations

from choreoscope.collector.reconstruct.load import EventRow, raw_connection
from choreoscope.collector.reconstruct.order import (
    processed_by_group_subject,
    processing_order,
    reached_bus_before,
)
from tests.collector.reconstruct.factory import T0, consumer, ev, load_flows, new_store, put


def _row(topic, partition, offset, ts):
    return EventRow("f", "x", None, None, None, None, None, None, None, None, ts, T0, topic,
                    partition, offset, None)


def test_bus_order():
    """Offsets decide within a partition; broker timestamps across topics and partitions."""
    assert reached_bus_before(_row("a", 0, 1, T0 + 9), _row("a", 0, 2, T0))
    assert not reached_bus_before(_row("a", 0, 2, T0), _row("a", 0, 1, T0 + 9))
    assert reached_bus_before(_row("a", 0, 5, T0), _row("a", 1, 1, T0 + 1))
    assert reached_bus_before(_row("a", 0, 5, T0), _row("b", 0, 1, T0 + 1))
    assert not reached_bus_before(_row("a", 0, 5, T0), _row("b", 0, 1, T0))
    assert not reached_bus_before(_row("a", 0, 5, None), _row("b", 0, 1, T0))


def test_bus_order_across_partitions_tolerates_the_skew():
    """Record timestamps are the producers' clocks: across partitions a record is first only
    when it leads by more than the skew; offsets in one partition need no tolerance."""
    assert not reached_bus_before(_row("a", 0, 5, T0), _row("b", 0, 1, T0 + 1000), 1000)
    assert reached_bus_before(_row("a", 0, 5, T0), _row("b", 0, 1, T0 + 1001), 1000)
    assert not reached_bus_before(_row("a", 0, 5, T0), _row("a", 1, 1, T0 + 400), 1000)
    assert reached_bus_before(_row("a", 0, 1, T0 + 9000), _row("a", 0, 2, T0), 1000)


def test_processing_order_keeps_the_first_processing(tmp_path):
    """Per group, each event maps to the start of its first processing."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1")
    e2 = ev("e2", "order.amended", flow="f1", offset=1)
    put(store, [e1, e2], [consumer(e1, "g", start_ms=T0 + 30),
                          consumer(e1, "g", start_ms=T0 + 10, span_id="a" * 16),
                          consumer(e2, "g", start_ms=T0 + 20), consumer(e2, "h", start_ms=T0 + 5)])
    flow, _ = load_flows(store)["f1"]
    assert processing_order(flow) == {"g": {"e1": (T0 + 10) * 1000, "e2": (T0 + 20) * 1000},
                                      "h": {"e2": (T0 + 5) * 1000}}


def test_processed_stream_sorted_and_one_row_per_span(tmp_path):
    """The stream is by group, subject, start; a span without offset of a twice-published event
    appears once, a span with an offset joins its own record."""
    store = new_store(tmp_path)
    a0 = ev("e1", "order.placed", flow="f1", offset=0, subject="s1", sequence=1)
    a1 = ev("e1", "order.placed", flow="f1", offset=1, subject="s1", sequence=1)
    b = ev("e2", "order.amended", flow="f1", offset=2, subject="s0", sequence=2)
    put(store, [a0, a1, b], [consumer(a0, "g", start_ms=T0 + 10, with_offset=False),
                             consumer(a1, "g", start_ms=T0 + 20, span_id="a" * 16),
                             consumer(b, "g", start_ms=T0 + 30),
                             consumer(b, "f", start_ms=T0 + 40)])
    with raw_connection(store) as raw:
        rows = [(p.group, p.subject, p.event_id, p.start_us // 1000 - T0)
                for p in processed_by_group_subject(raw, store.dialect)]
    assert rows == [("f", "s0", "e2", 40), ("g", "s0", "e2", 30), ("g", "s1", "e1", 10),
                    ("g", "s1", "e1", 20)]
