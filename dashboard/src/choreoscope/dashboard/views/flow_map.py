"""Flow map: the learned choreography (services emit event types, consumed by services)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from choreoscope.collector.query.graph import components, graph_dot
from choreoscope.dashboard import data
from choreoscope.dashboard.components import fmt, params, refresh, shell, windows

PAGE = "flow_map"
SMALL_MAP = 8  # nodes


def render() -> None:
    if not shell.start("Flow map"):
        return
    st.caption("Services (boxes) emit event types (ellipses) that other services consume. "
               "Edges show how often and a p95 time: on a service's emits edge, from the "
               "start of its handling of the cause to the publish; on a consumption edge, "
               "from the bus to the handler. Red edges carry anomalies: a producer's on its "
               "emits edge, a consumer group's on its consumption edge.")
    window = params.bind("window", st.selectbox, default="all", page=PAGE,
                         options=list(windows.WINDOWS), format_func=windows.label,
                         label="Time window")
    refresh.live(_body, window)


def _body(window: str) -> None:
    dot, graph = data.graph_dot(data.url(), windows.WINDOWS[window])
    if not graph["edges"]:
        if window != "all" and data.graph_dot(data.url(), None)[1]["edges"]:
            st.info(f"No traffic in the {windows.label(window)}: the map of that window is "
                    "empty. Choose a longer window, or all time for the choreography the "
                    "collector has learned.")
        else:
            st.info("No choreography learned yet: the collector draws the map once it has "
                    "read events (and, for consumers, their spans).")
        return
    # Part by part, the main choreography first: side by side, services no edge joins to it
    # took their share of the width and the whole was shrunk until its labels were
    # unreadable. A small part at its natural size: stretched, its boxes and text grow huge.
    for part in components(graph):
        st.graphviz_chart(graph_dot(part),
                          width="stretch" if len(part["nodes"]) > SMALL_MAP else "content")
    edges = pd.DataFrame(graph["edges"])
    edges["p50"] = edges["p50_ms"].map(fmt.duration)
    edges["p95"] = edges["p95_ms"].map(fmt.duration)
    cols = ["source", "kind", "target", "count", "p50", "p95"]
    if "anomaly_count" in edges:
        cols.append("anomaly_count")
    with st.expander(f"{len(edges)} edges", expanded=False):
        st.dataframe(fmt.blank_missing(edges[cols]), hide_index=True, width="stretch")
    with st.expander("DOT source"):
        st.code(dot, language="dot")


if __name__ == "__main__":
    render()
