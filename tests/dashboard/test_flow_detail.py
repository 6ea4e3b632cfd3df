"""The flow timeline's frame: short spans stay visible, tooltips keep their real duration."""

from __future__ import annotations

import pandas as pd

from choreoscope.dashboard.components.flow_detail import MIN_BAR_SHARE, timeline_frame

T0_US = 1_700_000_000_000_000


def _span(service: str, start_ms: float, duration_ms: float, status: str = "ok") -> dict:
    return {"service": service, "start_us": T0_US + int(start_ms * 1000),
            "duration_ms": duration_ms, "name": "process orders", "kind": "consumer",
            "status": status}


def test_a_tiny_failed_span_is_drawn_at_the_shortest_visible_width() -> None:
    """In a 3 s flow a 0.4 ms failed span is a bar of 0.6% of the timeline (18 ms); a long
    span keeps its own end; the detail still says 0.4 ms."""
    flow = {"spans": [_span("payments", 0, 3000), _span("shipping", 1000, 0.4, "error")],
            "events": []}
    df = timeline_frame(flow)
    failed = df[df["item"] == "span · failed"].iloc[0]
    assert failed["end"] - failed["start"] == pd.Timedelta(milliseconds=3000 * MIN_BAR_SHARE)
    assert failed["detail"] == "0.4 ms"
    long = df[df["service"] == "payments"].iloc[0]
    assert long["end"] - long["start"] == pd.Timedelta(milliseconds=3000)


def test_events_stay_points() -> None:
    """A bus event is a point: its end is its start; its time, as text, in UTC."""
    flow = {"spans": [_span("payments", 0, 10)],
            "events": [{"source": "orders", "type": "order.placed", "topic": "orders",
                        "partition": 0, "offset": 3, "broker_time": "2023-11-14T22:13:20.005Z"}]}
    df = timeline_frame(flow)
    event = df[df["item"] == "event on the bus"].iloc[0]
    assert (event["end"], event["at"]) == (event["start"], "22:13:20.005 UTC")
