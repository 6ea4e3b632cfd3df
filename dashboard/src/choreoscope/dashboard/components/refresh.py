"""Live refresh: the data parts of a page rerun every few seconds, filters untouched.

The sidebar control (default from `--refresh`, 5 s) can change the interval or pause it; the
choice is in the URL as `?refresh=SECONDS` (0 = paused).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import streamlit as st

from .. import settings

CHOICES = (0.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_KEY = "_cs_refresh_s"
_PAUSE = "_cs_refresh_paused"


def control() -> None:
    """The sidebar widgets: interval and pause. Call once per run, from the app."""
    default = settings.load().refresh_s
    choices = sorted(set(CHOICES) | {default})
    raw = st.query_params.get("refresh")
    if _KEY not in st.session_state:
        try:
            wanted = float(raw) if raw is not None else default
        except ValueError:
            wanted = default
        st.session_state[_KEY] = wanted if wanted in choices else default
        st.session_state[_PAUSE] = wanted == 0
    with st.sidebar:
        cols = st.columns([3, 2], vertical_alignment="bottom")
        seconds = cols[0].selectbox(
            "Auto-refresh", choices, key=_KEY,
            format_func=lambda s: "off" if s == 0 else f"every {s:g} s",
            help="How often the data on the page is reloaded; filters stay as they are.")
        paused = cols[1].toggle("Pause", key=_PAUSE, disabled=seconds == 0)
    value = 0.0 if paused else float(seconds)
    if value == default:
        st.query_params.pop("refresh", None)
    elif st.query_params.get("refresh") != f"{value:g}":
        st.query_params["refresh"] = f"{value:g}"


def interval() -> timedelta | None:
    """The current refresh interval, None when paused or off."""
    seconds = 0.0 if st.session_state.get(_PAUSE) else float(
        st.session_state.get(_KEY, settings.load().refresh_s))
    return timedelta(seconds=seconds) if seconds > 0 else None


def live(body: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `body(*args, **kwargs)` as a fragment rerunning at the chosen interval."""
    return st.fragment(body, run_every=interval())(*args, **kwargs)
