"""The Choreoscope dashboard: `streamlit run app.py` (normally via `choreoscope dashboard`).

A multipage app; each page is one module under `views/`. The store is read-only, through the
collector's query layer. An empty store shows the first-run page on every page.
"""

from __future__ import annotations

import streamlit as st

PAGES = (
    ("views/overview.py", "Overview", ":material/dashboard:", "overview"),
    ("views/flow_map.py", "Flow map", ":material/account_tree:", "flow_map"),
    ("views/flows.py", "Flows", ":material/list_alt:", "flows"),
    ("views/out_of_order.py", "Out-of-order", ":material/swap_vert:", "out_of_order"),
    ("views/outbox.py", "Outbox", ":material/outbox:", "outbox"),
    ("views/variants.py", "Variants", ":material/alt_route:", "variants"),
    ("views/event_health.py", "Event health", ":material/health_and_safety:", "event_health"),
)


def main() -> None:
    st.set_page_config(page_title="Choreoscope", page_icon=":material/hub:", layout="wide")
    pages = {slug: st.Page(path, title=title, icon=icon, url_path=slug,
                           default=slug == "overview")
             for path, title, icon, slug in PAGES}
    page = st.navigation(list(pages.values()))
    if page is pages["overview"] and "flow" in st.query_params:
        # A deep link `/?flow=ID` opens that flow on the Flows page.
        st.switch_page(pages["flows"], query_params=st.query_params.to_dict())
    st.sidebar.caption("Choreoscope · read-only view of the store")
    page.run()  # each page sets itself up (components/shell.py), first-run page included


main()
