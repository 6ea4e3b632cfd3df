"""One flow in detail: causal tree, timeline of bus events and spans, anomalies, payloads."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from .. import data
from . import fmt, jaeger, pager
from .time_axis import time_axis

STATUS_BADGE = {
    "completed": ":green-badge[completed]", "in_progress": ":blue-badge[in progress]",
    "stuck": ":orange-badge[stuck]", "failed": ":red-badge[failed]",
}
MAX_EVENTS_SHOWN = 200  # in the causal tree
# Records per page of payloads, and trace buttons above the tabs: a flow of 81 records took
# the browser 11 s to draw with an expander (two JSON views) and a button for each.
EVENTS_PER_PAGE = 20
MAX_TRACE_BUTTONS = 5
_EVENTS_PAGE = "flow_detail:events"
_SHOWN = "flow_detail:shown"  # the flow whose payload page is kept


ANCHOR = "flow-detail"  # where a link to the detail below a table scrolls to


def render(flow: dict[str, Any]) -> None:
    st.subheader(f"Flow {fmt.md(flow['correlation_id'])}", anchor=ANCHOR)
    st.markdown(f"{STATUS_BADGE.get(flow['status'], fmt.md(flow['status']))} · variant "
                f"{fmt.md(flow['variant'] or '—')}")
    c = st.columns(5)
    c[0].metric("Events", flow["event_count"])
    c[1].metric("Duration", fmt.duration(flow["duration_ms"]))
    c[2].metric("Services", len(flow["services"]))
    c[3].metric("Anomalies", len(flow["anomalies"]))
    started = flow["started_at"] or ""
    c[4].metric("Started (UTC)", fmt.started(started, data.now_ms()) or "—",
                help=started.replace("T", " "))
    dead = [a for a in flow["anomalies"]
            if a["kind"] == "stuck_outbox" and a["subkind"] == "dead"]
    if dead and not flow["events"]:
        st.warning("No event of this flow reached the bus: it is failed because its outbox "
                   + ("row is" if len(dead) == 1 else "rows are") + " dead.\n\n"
                   + "\n".join(f"- {fmt.md(a['detail'])}" for a in dead))
    if flow.get("trace_status") == "unsampled":
        st.caption("Its producers' samplers recorded none of its traces ("
                   + ", ".join(fmt.md(t) for t in flow["trace_ids"])
                   + "): no tracing backend has them.")
    elif flow["trace_ids"]:
        jaeger.buttons(flow["trace_ids"][:MAX_TRACE_BUTTONS])
        more = len(flow["trace_ids"]) - MAX_TRACE_BUTTONS
        if more > 0 and jaeger.enabled():
            st.caption(f"{more:,} more trace{'s' if more > 1 else ''}: the Spans tab links "
                       "each span to its trace.")
    if flow["trace_ids"] and flow.get("trace_status") != "unsampled" and not jaeger.enabled():
        st.caption("Trace ids: " + ", ".join(fmt.md(t) for t in flow["trace_ids"])
                   + " (start the dashboard with `--jaeger-ui URL` for links).")
    if st.session_state.get(_SHOWN) != flow["correlation_id"]:  # another flow: its first page
        st.session_state[_SHOWN] = flow["correlation_id"]
        st.session_state.pop(f"{_EVENTS_PAGE}:page", None)
    tabs = st.tabs(["Timeline", "Causal tree", f"Anomalies ({len(flow['anomalies'])})",
                    f"Events and payloads ({len(flow['events'])})", f"Spans ({len(flow['spans'])})"])
    with tabs[0]:
        _timeline(flow)
    with tabs[1]:
        st.caption("Each event under the event that caused it, with the time it reached the "
                   "bus (UTC) and its topic/partition/offset.")
        st.markdown(causal_tree_markdown(flow["events"]))
    with tabs[2]:
        _anomalies(flow["anomalies"])
    with tabs[3]:
        _events(flow["events"])
    with tabs[4]:
        _spans(flow)


def causal_tree_markdown(events: list[dict[str, Any]]) -> str:
    """The flow's events as a nested list: each event under the event that caused it (the
    bus's text escaped, never read as Markdown)."""
    first: dict[str, int] = {}
    for i, e in enumerate(events):
        if e["id"]:
            first.setdefault(e["id"], i)
    children: dict[int | None, list[int]] = {}
    for i, e in enumerate(events):
        parent = first.get(e["causation_id"]) if e["causation_id"] else None
        if parent == i:
            parent = None
        children.setdefault(parent, []).append(i)
    lines: list[str] = []
    seen: set[int] = set()

    def walk(i: int, depth: int) -> None:
        if i in seen or len(lines) >= MAX_EVENTS_SHOWN:
            return
        seen.add(i)
        e = events[i]
        when = (e.get("broker_time") or e.get("observed_at") or "")[11:23]
        extra = " · :orange[duplicate]" if e.get("duplicate") else ""
        if e["causation_id"] and e["causation_id"] not in first:
            extra += f" · :red[cause {fmt.md(e['causation_id'][:13])}… never seen]"
        lines.append(f"{'    ' * depth}- **{fmt.md(e['type'] or '?')}** by "
                     f"{fmt.md(e['source'] or '?')} · subject {fmt.md(e['subject'] or '—')} · "
                     f"{when} · {_position(e)}{extra}")
        for j in children.get(i, []):
            walk(j, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    for i in range(len(events)):  # anything left (cycles) at the top level
        walk(i, 0)
    return "\n".join(lines) or "_No events stored for this flow._"


def _position(event: dict[str, Any]) -> str:
    """`topic/partition/offset`, escaped for Markdown."""
    return fmt.md(f"{event['topic']}/{event['partition']}/{event['offset']}")


# Timeline bar colours; a failed span is red whatever its kind.
SPAN_COLORS = {
    "span · consumer": "#4c78a8",
    "span · producer": "#f58518",
    "span · server": "#72b7b2",
    "span · client": "#54a24b",
    "span · internal": "#9d9d9d",
    "span · failed": "#e45756",
}


# The shortest bar drawn, as a share of the timeline: a 0.4 ms failed span in a 3 s flow
# would otherwise be a hairline nobody sees (its tooltip keeps the real duration).
MIN_BAR_SHARE = 0.006


def timeline_frame(flow: dict[str, Any]) -> pd.DataFrame:
    """Bars for spans and points for bus events, one row per service; every bar at least
    `MIN_BAR_SHARE` of the whole timeline wide. `at` is the start as text, in UTC."""
    rows: list[dict[str, Any]] = []
    for s in flow["spans"]:
        start = pd.Timestamp(int(s["start_us"]), unit="us", tz="UTC")
        end = start + pd.Timedelta(microseconds=max(int(s["duration_ms"] * 1000), 1))
        rows.append({"service": s["service"] or "?", "start": start, "end": end,
                     "what": s["name"],
                     "item": "span · failed" if s["status"] == "error" else f"span · {s['kind']}",
                     "status": s["status"], "detail": f"{s['duration_ms']:.1f} ms"})
    for e in flow["events"]:
        at = e.get("broker_time") or e.get("observed_at")
        if not at:
            continue
        t = pd.Timestamp(at)
        rows.append({"service": e["source"] or "?", "start": t, "end": t,
                     "what": e["type"] or "?", "item": "event on the bus",
                     "status": "duplicate" if e.get("duplicate") else "",
                     "detail": f"{e['topic']}/{e['partition']}/{e['offset']}"})
    df = pd.DataFrame(rows)
    if not df.empty:
        shortest = (df["end"].max() - df["start"].min()) * MIN_BAR_SHARE
        bars = df["item"] != "event on the bus"
        df.loc[bars, "end"] = df.loc[bars, ["end"]].assign(
            least=df.loc[bars, "start"] + shortest).max(axis=1)
        df["at"] = df["start"].dt.tz_convert("UTC").dt.strftime("%H:%M:%S.%f").str[:-3] + " UTC"
    return df


def _timeline(flow: dict[str, Any]) -> None:
    df = timeline_frame(flow)
    if df.empty:
        st.caption("Nothing to draw.")
        return
    st.caption("One row per service: bars are its spans (from the stored traces), ◆ marks "
               "an event it put on the bus. Hover for details."
               + ("" if flow["spans"] else f" {no_spans_note(flow)}"))
    shown = [k for k in SPAN_COLORS if k in set(df["item"])]  # the legend: kinds present
    lo_ms = int(df["start"].min().value // 1_000_000)
    hi_ms = int(df["end"].max().value // 1_000_000)
    base = alt.Chart(df).encode(
        # a UTC scale: the axis in UTC like the rest of the page, not the browser's zone
        x=alt.X("start:T", title=None, scale=alt.Scale(type="utc"),
                axis=time_axis([lo_ms, hi_ms], 1, "%H:%M:%S.%L", max_ticks=6)),
        y=alt.Y("service:N", title=None, sort=None, axis=alt.Axis(labelLimit=240)),
        tooltip=["what", "item", "service", alt.Tooltip("at:N", title="start"), "detail",
                 "status"])
    spans = base.transform_filter(alt.datum.item != "event on the bus").mark_bar(
        height=14, cornerRadius=2).encode(
        x2="end:T",
        color=alt.Color("item:N", title=None,
                        scale=alt.Scale(domain=shown, range=[SPAN_COLORS[k] for k in shown])))
    points = base.transform_filter(alt.datum.item == "event on the bus").mark_point(
        shape="diamond", size=90, filled=True, color="#111827")
    height = 40 * max(df["service"].nunique(), 2) + 40
    st.altair_chart((spans + points).properties(height=height, padding={"left": 8}),
                    width="stretch")


def _anomalies(anomalies: list[dict[str, Any]]) -> None:
    if not anomalies:
        st.caption("No anomalies in this flow.")
        return
    df = pd.DataFrame(anomalies)
    df["detected"] = df["detected_at_ms"].map(fmt.when)
    st.dataframe(fmt.blank_missing(
        df[["kind", "subkind", "detail", "event_id", "subject", "group", "detected"]]),
        hide_index=True, width="stretch")


def _events(events: list[dict[str, Any]]) -> None:
    st.caption("Payloads as stored by the collector (redacted, size-capped).")
    page = pager.fetch(_EVENTS_PAGE, EVENTS_PER_PAGE, lambda offset: {
        "total": len(events), "offset": offset,
        "rows": events[offset:offset + EVENTS_PER_PAGE]})
    for e in page["rows"]:
        label = (f"{fmt.md(e['type'] or '?')} · {fmt.md(e['source'] or '?')} · {_position(e)}"
                 + (" · duplicate" if e.get("duplicate") else ""))
        with st.expander(label):
            left, right = st.columns(2)
            with left:
                st.markdown("**Data**")
                st.json(e.get("data"), expanded=2)
            with right:
                st.markdown("**Headers**")
                st.json(e.get("headers") or {}, expanded=1)
            if e.get("problems"):
                st.warning("Problems: " + ", ".join(map(fmt.md, e["problems"])))
    if len(events) > EVENTS_PER_PAGE:
        first = page["offset"] + 1
        st.caption(f"Records {first:,} to {first + len(page['rows']) - 1:,} of {len(events):,}.")
        pager.control(_EVENTS_PAGE, len(events), EVENTS_PER_PAGE)


def no_spans_note(flow: dict[str, Any]) -> str:
    """Why a flow shows no span: whether any will come."""
    if flow.get("trace_status") == "unsampled":
        return "Its traces were not sampled: no spans will come."
    if not flow["trace_ids"]:
        return "Its events carry no trace context: no spans will come."
    return "No spans are stored for this flow yet."


def _spans(flow: dict[str, Any]) -> None:
    spans = flow["spans"]
    if not spans:
        st.caption(no_spans_note(flow))
        return
    df = pd.DataFrame(spans)
    cols = ["service", "name", "kind", "status", "start", "duration_ms", "group",
            "message_id", "out_of_order", "error_type"]
    column_config = {}
    if jaeger.enabled():
        df["jaeger"] = df["trace_id"].map(jaeger.trace_url)
        cols.append("jaeger")
        column_config["jaeger"] = jaeger.link_column()
    st.dataframe(fmt.blank_missing(df[cols]), hide_index=True, width="stretch",
                 column_config=column_config)
