"""Event health: envelope problems per producer and type, schema versions, untraced events."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import fmt, params, refresh, shell, windows

PAGE = "event_health"
PROBLEMS = {  # decoder problem codes, in words
    "missing_id": "no event id", "missing_type": "no event type",
    "missing_source": "no source", "missing_time": "no event time",
    "missing_schema_version": "no schema version", "bad_specversion": "bad specversion",
    "bad_time": "time not RFC 3339", "bad_sequence": "bad sequence",
    "bad_traceparent": "malformed traceparent", "bad_tracestate": "malformed tracestate",
    "bad_header": "undecodable header", "duplicate_header": "header repeated",
    "type_not_past_tense": "type not in past tense", "undecodable_value": "value not decodable",
    "bad_field": "envelope field of the wrong type", "no_envelope": "no envelope at all",
}


def render() -> None:
    if not shell.start("Event health"):
        return
    st.caption("What producers put on the bus: envelope problems found while decoding, schema "
               "versions in use, and events that carry no trace context.")
    window = params.bind("window", st.selectbox, default="all", page=PAGE,
                         options=list(windows.WINDOWS), format_func=windows.label,
                         label="Time window")
    refresh.live(_body, window)


def _body(window: str) -> None:
    h = data.event_health(data.url(), windows.WINDOWS[window])
    if not h["events"]:
        st.info("No events in this window.")
        return
    with_problems = sum(p["count"] for p in h["problems"])
    untraced = h["untraced_total"]
    c = st.columns(3)
    c[0].metric("Events", f"{h['events']:,}", border=True)
    c[1].metric("Problems found", f"{with_problems:,}", border=True,
                help="Problem findings; one event can have several.")
    c[2].metric("Without trace context", f"{untraced:,} ({fmt.share(untraced / h['events'])})",
                border=True, help="Events that carried no `traceparent`. The `untraced` "
                "anomalies count these and also events whose trace never reached the "
                "collector (Overview, Anomalies by kind).")

    st.subheader("Envelope problems")
    if not h["problems"]:
        st.success("Every event decoded cleanly.")
    else:
        p = pd.DataFrame(h["problems"])
        p["what"] = p["problem"].map(lambda c: PROBLEMS.get(c, c.replace("_", " ")))
        left, right = st.columns([3, 2])
        left.dataframe(fmt.blank_missing(p[["source", "type", "problem", "what", "count"]]),
                       hide_index=True,
                       width="stretch")
        with right:
            st.altair_chart(alt.Chart(p).mark_bar(color="#dc2626").encode(
                x=alt.X("sum(count):Q", title="events",
                        axis=alt.Axis(tickMinStep=1, format="d")),
                y=alt.Y("what:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220)),
                tooltip=["what", "sum(count):Q"]).properties(height=200))

    left, right = st.columns(2)
    with left:
        st.subheader("Schema versions")
        st.dataframe(fmt.blank_missing(versions_table(h["schema_versions"])), hide_index=True, width="stretch")
    with right:
        st.subheader("Events without trace context")
        if not h["untraced"]:
            st.success("Every event carries trace context.")
        else:
            u = pd.DataFrame(h["untraced"])
            st.dataframe(fmt.blank_missing(u[["source", "type", "count"]]), hide_index=True, width="stretch",
                         column_config={"count": st.column_config.NumberColumn(
                             "events without trace context")})


def versions_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per event type: its versions, and the events per version when it mixes them."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_type.setdefault(r["type"] or "(unknown type)", []).append(r)
    out = []
    for etype, versions in by_type.items():
        names = [f"v{r['schema_version']}" if r["schema_version"] else "(none)"
                 for r in versions]
        mix = " · ".join(f"{n}: {r['count']:,}" for n, r in zip(names, versions, strict=True)
                         if r["count"] is not None)
        out.append({"type": etype, "versions": ", ".join(names),
                    "events per version": mix or "one version only"})
    return pd.DataFrame(out, columns=["type", "versions", "events per version"])


if __name__ == "__main__":
    render()
