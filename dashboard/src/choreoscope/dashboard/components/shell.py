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

# Columns of the page (not the sidebar's) at least 12rem wide, wrapping onto another row when
# the page is narrower: four metric tiles beside an open sidebar in an 800 px window cut
# their figures to `1,…`, and Streamlit stacks columns only below 640 px.
_WRAPPING_COLUMNS = (
    "<style>[data-testid='stMain'] [data-testid='stHorizontalBlock']{flex-wrap:wrap}"
    "[data-testid='stMain'] [data-testid='stHorizontalBlock'] > [data-testid='stColumn']"
    "{min-width:min(12rem,100%)}</style>")


def start(title: str) -> bool:
    """Set up the page; False (after showing the first-run page) when there is nothing yet."""
    with contextlib.suppress(st.errors.StreamlitAPIException):
        st.set_page_config(page_title=f"{title} · Choreoscope", page_icon=":material/hub:",
                           layout="wide")
    st.html(_WRAPPING_COLUMNS)
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
