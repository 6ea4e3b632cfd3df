"""Outbox: backlog, dead rows and publish lag per monitored outbox table; stuck rows."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import flow_links, fmt, freshness, jaeger, refresh, shell


def render() -> None:
    if not shell.start("Outbox"):
        return
    st.caption("Transactional outbox tables the collector monitors (`--outbox NAME=DB_URL`). "
               "A row is stuck when it waits longer than the collector's `--outbox-stuck-after`.")
    refresh.live(_body)


def _body() -> None:
    sources = data.outbox(data.url())
    if not sources:
        st.info("No outbox is monitored. Start the collector with "
                "`--outbox NAME=postgresql://HOST/DB#outbox` to watch one.")
    for source in sources:
        _source(source)
    lag = data.consumer_lag(data.url())
    st.subheader("Consumer lag")
    if not lag:
        st.caption("No consumer lag measured yet.")
        return
    freshness.show("Lag", max(int(r["measured_at_ms"]) for r in lag))
    df = pd.DataFrame(lag)
    df["measured"] = df["measured_at_ms"].map(fmt.when)
    st.dataframe(fmt.blank_missing(df[["group", "topic", "lag", "partitions", "measured"]]),
                 hide_index=True, width="stretch",
                 column_config={"partitions": st.column_config.NumberColumn(
                     "partitions committed", help="Partitions where the group has committed "
                     "an offset: an empty partition has none, and is not counted.")})


def _source(s: dict[str, Any]) -> None:
    with st.container(border=True):
        st.subheader(f"{fmt.md(s['source'])} · {fmt.md(s['table'])}")
        error = fmt.md(s.get("last_error") or "no answer")
        if not s["reachable"] and not s.get("last_ok_at"):
            tried = (s.get("last_poll_at") or "—").replace("T", " ")[:19]
            st.error(f"Unreachable: {error}. It has never answered a poll (last tried "
                     f"{tried} UTC): there are no figures yet.")
            return
        if not s["reachable"]:
            last_ok = s["last_ok_at"].replace("T", " ")[:19]
            st.error(f"Unreachable: {error}. Last good poll: {last_ok}. The figures below are "
                     "from that poll.")
        ok = fmt.rfc3339(s.get("last_ok_at"))
        freshness.show("Figures and ages", None if ok is None else ok.value // 1_000_000)
        c = st.columns(4)
        c[0].metric("Pending", _int(s["pending"]))
        c[1].metric("Dead", _int(s["dead"]))
        age = s["oldest_pending_age_s"]
        c[2].metric("Oldest pending", fmt.duration(None if age is None else age * 1000))
        c[3].metric("Publish lag p95", fmt.duration(s["publish_lag_p95_ms"]))
        if not s["stuck"]:
            st.caption("No stuck rows.")
            return
        df = pd.DataFrame(s["stuck"])
        df["aggregate"] = df["aggregatetype"].astype(str) + "/" + df["aggregateid"].astype(str)
        df["age"] = df["age_s"].map(lambda a: fmt.duration(None if a is None else a * 1000))
        # A row whose event never reached the bus has no flow to open.
        df["flow"] = [flow_links.href(c) if c and has else None
                      for c, has in zip(df["correlation_id"], df["has_flow"], strict=True)]
        cols = ["id", "aggregate", "type", "status", "age", "attempts", "flow"]
        config: dict[str, Any] = {"flow": flow_links.column("flow")}
        if jaeger.enabled():
            df["jaeger"] = df["trace_id"].map(jaeger.trace_url)
            cols.append("jaeger")
            config["jaeger"] = jaeger.link_column()
        cols.append("last_error")
        dead = int((df["status"] == "dead").sum()) if "status" in df else 0
        kinds = [f"{n:,} {what}" for n, what in ((len(df) - dead, "stuck"), (dead, "dead")) if n]
        st.markdown(f"**{' and '.join(kinds)} row{'s' if len(df) != 1 else ''}**")
        if not df["has_flow"].all():
            st.caption("A row without a flow link never reached the bus: no event of its "
                       "flow has been seen.")
        st.dataframe(fmt.blank_missing(df[[c for c in cols if c in df]]), hide_index=True,
                     width="stretch",
                     column_config=config)


def _int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


if __name__ == "__main__":
    render()
