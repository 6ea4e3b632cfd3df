"""What every page does first: page config, the sidebar refresh control, the first-run check.

Pages call `start()` themselves rather than relying on app.py, because AppTest.switch_page
runs a page file directly. (The folder is `views/`, not `pages/`: Streamlit would take a
`pages/` folder beside app.py for its older automatic multipage mode.)
"""

from __future__ import annotations

import contextlib

import streamlit as st

from .. import data
from . import first_run, refresh


def start(title: str) -> bool:
    """Set up the page; False (after showing the first-run page) when there is nothing yet."""
    with contextlib.suppress(st.errors.StreamlitAPIException):
        st.set_page_config(page_title=f"{title} · Choreoscope", page_icon=":material/hub:",
                           layout="wide")
    refresh.control()
    state = data.state(data.url())
    if state["state"] != "ok":
        refresh.live(_first_run)
        return False
    st.title(title)
    return True


def _first_run() -> None:
    state = data.state(data.url())
    if state["state"] == "ok":
        st.rerun(scope="app")
    first_run.render(state, data.url())
