"""Overview: traffic, flows by status, anomalies, outbox and lag; each number links onward."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import fmt, freshness, refresh, shell
from choreoscope.dashboard.components.time_axis import MINUTE_MS, bucket_x

KIND_LABELS = {
    "out_of_order": "Out-of-order", "duplicate": "Duplicates", "orphan": "Orphans",
    "stuck_flow": "Stuck flows", "failed_handler": "Failed handlers",
    "envelope": "Envelope problems", "untraced": "Untraced", "stuck_outbox": "Stuck outbox rows",
}


def render() -> None:
    if not shell.start("Overview"):
        return
    refresh.live(_body)


def _body() -> None:
    o = data.overview(data.url())
    per_minute = pd.DataFrame(o["events_per_minute"])
    recent = [m["count"] for m in o["events_per_minute"]]
    st.caption(f"Last event stored {fmt.when(o['last_event_ms'])} · {_analysed(o)} · store "
               f"`{_masked()}`")
    _warn_if_analysis_stale(o)

    st.subheader("Traffic")
    c = st.columns(4)
    rate, minutes = _per_minute(o)
    c[0].metric("Events / min (last 5 min)" if minutes == 5.0 else
                f"Events / min (last {minutes:.1f} min)", f"{rate:.1f}",
                chart_data=recent[-30:] if o["events_last_5_min"] else None, chart_type="bar",
                border=True, help="Records stored per minute, averaged over the last five "
                                  "minutes (over the minutes since the first, when the store "
                                  "is younger); the bars are the last 30 minutes of traffic.")
    c[1].metric("Events stored", f"{o['events_total']:,}", border=True)
    c[2].metric("Events with trace context", fmt.share(o["traced_share"]), border=True,
                help="Share of records carrying a W3C traceparent header, sampled or not: "
                     "a flow whose traces were not sampled says so in its detail.")
    c[3].metric("Consumer lag", f"{o['consumer_lag']:,}" if o["consumer_groups"] else "—",
                border=True, help=f"Summed over {o['consumer_groups']} consumer group(s)."
                if o["consumer_groups"] else "No consumer lag measured yet.")
    c[0].page_link("views/flow_map.py", label="Flow map", icon=":material/arrow_forward:")
    c[1].page_link("views/flows.py", label="All flows", icon=":material/arrow_forward:")
    c[2].page_link("views/event_health.py", label="Event health", icon=":material/arrow_forward:")
    c[3].page_link("views/outbox.py", label="Lag and outbox", icon=":material/arrow_forward:")
    if o["consumer_groups"]:
        freshness.show("Lag measured", o["lag_measured_at_ms"], where=c[3], compact=True)

    st.subheader("Flows")
    by_status = o["flows_by_status"]
    c = st.columns(4)
    for col, status, label in zip(c, ("in_progress", "completed", "stuck", "failed"),
                                  ("Active", "Completed", "Stuck", "Failed"), strict=True):
        col.metric(label, f"{by_status.get(status, 0):,}", border=True)
        col.page_link("views/flows.py", label=f"{label} flows", icon=":material/arrow_forward:",
                      query_params={"status": status})

    st.subheader("Anomalies and outbox")
    kinds = o["anomalies_by_kind"]
    c = st.columns(4)
    c[0].metric("Out-of-order arrivals", f"{kinds.get('out_of_order', 0):,}", border=True)
    c[0].page_link("views/out_of_order.py", label="Out-of-order",
                   icon=":material/arrow_forward:")
    c[1].metric("Duplicated events", f"{o['duplicated_events']:,}", border=True,
                help="Events published or delivered more than once, each counted once "
                     f"({kinds.get('duplicate', 0):,} duplicate anomalies: a publish and a "
                     "delivery to each consumer group are one each).")
    c[1].page_link("views/flows.py", label="Flows with duplicates",
                   icon=":material/arrow_forward:", query_params={"anomaly": "duplicate"})
    _outbox(o, c[2], c[3])
    if o.get("otlp_spans_dropped"):
        st.warning(f"{o['otlp_spans_dropped']:,} spans dropped by the OTLP receiver (its queue "
                   "was full): some flows may miss spans.")

    left, right = st.columns(2)
    with left:
        st.markdown(f"**Events per minute** (the hour up to {fmt.when(o['window_end_ms'])})")
        if per_minute.empty or not per_minute["count"].any():
            st.caption("No events in that hour.")
        else:
            per_minute["minute"] = fmt.ts(per_minute["minute_ms"])
            per_minute["at"] = per_minute["minute_ms"].map(fmt.when)  # tooltip, in UTC
            st.altair_chart(alt.Chart(per_minute).mark_bar(color="#2563eb").encode(
                x=bucket_x("minute", int(per_minute["minute_ms"].min()),
                           int(per_minute["minute_ms"].max()) + MINUTE_MS, MINUTE_MS, "%H:%M"),
                y=alt.Y("count:Q", title="events", axis=alt.Axis(tickMinStep=1, format="d")),
                tooltip=[alt.Tooltip("at:N", title="minute"), "count:Q"]).properties(height=200))
    with right:
        st.markdown("**Anomalies by kind**")
        _anomaly_chart(kinds)
    _anomaly_minutes(o["anomalies_per_minute"], o["anomalies_since_ms"], o["now_ms"])


def _per_minute(o: dict[str, Any]) -> tuple[float, float]:
    """Events per minute over the last five minutes, or over the minutes since the first
    event when the store is younger (at least one: a first burst is not a rate); and those
    minutes."""
    first = o.get("first_event_ms")
    minutes = 5.0
    if first is not None:
        minutes = min(5.0, max(1.0, (o["now_ms"] - first) / 60_000))
    return o["events_last_5_min"] / minutes, minutes


def _outbox(o: dict[str, Any], backlog: Any, oldest: Any) -> None:
    """Backlog and oldest pending row over the outbox sources measured; a source never
    measured (unreachable from the start) has no figures and is said to have none."""
    never, unreachable = o["outbox_never_measured"], o["outbox_unreachable"]
    measured = o["outbox_sources"] - never
    backlog.metric("Outbox backlog", f"{o['outbox_pending']:,}" if measured else "—",
                   border=True,
                   help=f"Pending rows over {measured} measured outbox source(s); "
                        f"{o['outbox_dead']} dead." if measured else
                        "No outbox measured: none is monitored (`collect --outbox NAME=URL`) "
                        "or none answered yet.")
    if measured and o["outbox_dead"]:  # events lost before the bus: no flow counts them
        dead = o["outbox_dead"]
        backlog.markdown(f":red[**{dead:,} dead** outbox row{'' if dead == 1 else 's'}: "
                         f"event{'' if dead == 1 else 's'} never published]")
    oldest.metric("Oldest pending outbox row", fmt.duration(
        None if o["outbox_oldest_pending_age_s"] is None
        else o["outbox_oldest_pending_age_s"] * 1000), border=True)
    backlog.page_link("views/outbox.py", label="Outbox", icon=":material/arrow_forward:")
    if measured:
        freshness.show("Outbox measured", o["outbox_as_of_ms"], where=oldest, compact=True)
    if unreachable:
        oldest.error(f"{unreachable} outbox source(s) unreachable"
                     + (f"; {never} never measured, with no figures yet" if never else ""))


def _anomaly_chart(kinds: dict[str, int]) -> None:
    if not kinds:
        st.caption("No anomalies detected.")
        return
    df = pd.DataFrame([{"kind": KIND_LABELS.get(k, k), "count": n} for k, n in kinds.items()])
    st.altair_chart(alt.Chart(df).mark_bar(color="#dc2626").encode(
        x=alt.X("count:Q", title="anomalies", axis=alt.Axis(tickMinStep=1, format="d")),
        # every kind labelled: Vega hides every other label of a crowded band axis
        y=alt.Y("kind:N", sort="-x", title=None, axis=alt.Axis(labelLimit=200,
                                                               labelOverlap=False)),
        tooltip=["kind", "count"]).properties(height=max(200, 30 * len(df))))


def _anomaly_minutes(rows: list[dict[str, Any]], since_ms: int, now_ms: int) -> None:
    """Anomalies per detection minute and kind, on an axis over the whole window shown."""
    if not rows:
        return
    df = pd.DataFrame(rows)
    df["minute"] = fmt.ts(df["minute_ms"])
    df["at"] = df["minute_ms"].map(fmt.when)
    df["kind"] = df["kind"].map(lambda k: KIND_LABELS.get(k, k))
    st.markdown("**Anomalies detected per minute** (last hour)")
    st.altair_chart(alt.Chart(df).mark_bar().encode(
        x=bucket_x("minute", since_ms - since_ms % MINUTE_MS,
                   now_ms - now_ms % MINUTE_MS + MINUTE_MS, MINUTE_MS, "%H:%M"),
        y=alt.Y("count:Q", title="anomalies", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("kind:N", title="kind"),
        tooltip=[alt.Tooltip("at:N", title="minute"), "kind", "count"]).properties(height=180))


def _analysed(o: dict[str, Any]) -> str:
    """When the flows and anomalies shown were computed: the collector analyses the store in
    passes, further apart on a large store (each rests three times its duration)."""
    if o["analysed_at_ms"] is None:
        return "flows not analysed yet"
    took = o["analysis_s"]
    spent = "" if took is None else f" (the pass took {fmt.duration(took * 1000)})"
    return f"flows analysed {fmt.when(o['analysed_at_ms'])}{spent}"


def _warn_if_analysis_stale(o: dict[str, Any]) -> None:
    """Statuses and anomaly counts are those of the last analysis pass (a pass skipped for
    lack of change confirms them): one older than a running collector would leave them
    (three analysis intervals, at least 30 s, plus four times the last full pass's duration
    on a large store) says so, since flows then never turn stuck."""
    at, took = o["analysis_checked_at_ms"], o["analysis_s"] or 0.0
    if at is None:
        return
    now = data.now_ms()
    allowed_ms = (max(freshness.STALE_POLLS * o["analyze_s"], 30.0) + 4 * took) * 1000
    if now - at > allowed_ms:
        st.warning(f"**Stale:** flows analysed {freshness.as_of(at, now)}: statuses and "
                   "anomalies are as they were then (an in-progress flow never turns stuck). "
                   "The collector may be stopped.", icon=":material/history:")


def _masked() -> str:
    from choreoscope.collector.query.dashboard import mask_url

    return mask_url(data.url())


if __name__ == "__main__":
    render()
