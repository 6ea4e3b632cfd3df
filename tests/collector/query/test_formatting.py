"""Readable tables: aligned columns, numbers right-aligned, control characters neutralised."""

from __future__ import annotations

from choreoscope.collector.query.formatting import (
    flow_detail,
    flows_table,
    graph_table,
    outbox_table,
    table,
)
from tests.collector.query import expected


def test_table_alignment() -> None:
    """Columns are as wide as their widest cell; numbers right-aligned; None shows as '-'."""
    rows = [{"name": "a", "n": 5}, {"name": "longer", "n": 120}, {"name": None, "n": None}]
    text = table(rows, [("NAME", lambda r: r["name"]), ("N", lambda r: r["n"])])
    assert text.splitlines() == [
        "NAME      N",
        "a         5",
        "longer  120",
        "-         -",
    ]


def test_a_column_with_no_values_is_left_aligned() -> None:
    """A column of only '-' is text (a subject no anomaly of the kind has), not a number."""
    rows = [{"kind": "envelope", "subject": None}, {"kind": "envelope", "subject": None}]
    text = table(rows, [("SUBJECT", lambda r: r["subject"]), ("KIND", lambda r: r["kind"])])
    assert text.splitlines() == ["SUBJECT  KIND", "-        envelope", "-        envelope"]


def test_table_neutralises_control_characters() -> None:
    """ANSI escapes and line breaks in stored values cannot reach the terminal."""
    text = table([{"t": "\x1b[31mred\nline"}], [("T", lambda r: r["t"])])
    assert text.splitlines() == ["T", "?[31mred?line"]


def test_long_cells_are_cut() -> None:
    """A cell longer than 60 characters ends with an ellipsis, except in the last column."""
    text = table([{"t": "x" * 100}], [("T", lambda r: r["t"]), ("D", lambda r: r["t"])])
    assert text.splitlines()[1] == "x" * 59 + "…  " + "x" * 100


def test_flows_table() -> None:
    """The flows table shows one aligned line per flow."""
    assert flows_table(expected.FLOWS).splitlines() == [
        "CORRELATION ID  STATUS     STARTED                   DURATION  EVENTS  ANOMALIES  VARIANT",
        "ord-3           failed     2025-11-24T16:02:00.000Z  500 ms         2          2  order.placed > payment.failed",
        "ord-2           stuck      2025-11-24T16:01:00.000Z  0 ms           1          1  order.placed",
        "ord-1           completed  2025-11-24T16:00:00.000Z  300 ms         3          1  order.placed > payment.succeeded > order.shipped",
    ]


def test_outbox_table_marks_unreachable() -> None:
    """An unreachable source says so, with its error and last good poll, never 'ok'."""
    lines = outbox_table(expected.OUTBOX).splitlines()
    assert lines[1].split()[:3] == ["billing", "billing.outbox", "UNREACHABLE"]
    assert lines[1].endswith("2025-11-24T16:00:05.000Z")
    assert lines[2].split()[:3] == ["orders", "outbox", "ok"]
    assert "billing: unreachable: connection refused" in lines
    assert "STUCK ROWS" in lines
    assert lines[-1].split()[:6] == ["orders", "o-1", "dead", "order.cancelled", "orders/ord_3",
                                     "5"]


def test_graph_table() -> None:
    """The graph table lists edges with counts and latencies."""
    lines = graph_table(expected.GRAPH).splitlines()
    assert lines[0].split() == ["SOURCE", "EDGE", "TARGET", "COUNT", "P50", "P95", "ANOMALIES"]
    assert lines[1].split() == ["order.placed", "consumed_by", "payments", "2", "12", "ms", "40",
                                "ms", "1"]



def test_flow_detail_of_a_flow_whose_events_never_reached_the_bus() -> None:
    """A flow known only from a dead outbox row says its events never reached the bus."""
    flow = {"correlation_id": "ord-9", "status": "failed",
            "started_at": "2023-11-14T22:12:20.000Z", "last_seen_at": "2023-11-14T22:12:20.000Z",
            "duration_ms": 0, "event_count": 0, "services": ["order-service"],
            "event_types": ["order.placed"], "trace_ids": [], "variant": "", "events": [],
            "spans": [], "anomalies": []}
    assert flow_detail(flow) == "\n".join([
        "flow        ord-9",
        "status      failed",
        "started     2023-11-14T22:12:20.000Z",
        "last seen   2023-11-14T22:12:20.000Z  (0 ms)",
        "events      0 (0 records)",
        "services    order-service",
        "traces      -",
        "variant     -",
        "",
        "EVENTS",
        "none reached the bus"])


def test_flow_detail_names_the_time_it_shows() -> None:
    """The events table shows ce_time as the producer wrote it, and its heading says so: the
    bus's time (the dashboard's causal tree) can differ from it."""
    event = {"time": "2023-11-14T22:13:20Z", "type": "order.placed", "source": "orders",
             "subject": "ord-9", "id": "e-1", "causation_id": None, "topic": "shop",
             "partition": 0, "offset": 7, "problems": [], "duplicate": False}
    flow = {"correlation_id": "ord-9", "status": "in_progress",
            "started_at": "2023-11-14T22:13:20.000Z", "last_seen_at": "2023-11-14T22:13:20.000Z",
            "duration_ms": 0, "event_count": 1, "services": ["orders"],
            "event_types": ["order.placed"], "trace_ids": [], "variant": "order.placed",
            "events": [event], "spans": [], "anomalies": []}
    lines = flow_detail(flow).split("EVENTS\n")[1].splitlines()
    assert lines[0].split() == ["CE_TIME", "TYPE", "SOURCE", "SUBJECT", "ID", "CAUSED", "BY",
                                "AT", "NOTE"]
    assert lines[1].split()[:6] == ["2023-11-14T22:13:20Z", "order.placed", "orders", "ord-9",
                                    "e-1", "-"]
