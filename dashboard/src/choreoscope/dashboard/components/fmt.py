"""Human formats for stored values: times (ms, UTC), durations, shares, and bus text in
Markdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pandas as pd


def when(ms: int | None) -> str:
    """`1764135314123` -> `2025-11-26 05:35:14 UTC`; None (or NaN) -> `—`."""
    if ms is None or pd.isna(ms):
        return "—"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ms: int | None) -> str:
    """`1764135314123` -> `05:35:14.123` (UTC, milliseconds): for ordering within a day."""
    if ms is None or pd.isna(ms):
        return "—"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def clock_us(us: int | None) -> str:
    """`1764135314123456` -> `05:35:14.123456` (UTC, microseconds): span times, whose order
    within one millisecond is still their order."""
    if us is None or pd.isna(us):
        return "—"
    us = int(us)
    return (datetime.fromtimestamp(us // 1_000_000, tz=UTC).strftime("%H:%M:%S")
            + f".{us % 1_000_000:06d}")


def started(rfc3339: str, now_ms: int) -> str:
    """`2026-11-29T04:44:49.123Z` -> `04:44:49` on the day of `now_ms` (UTC), else
    `Nov 28 04:44:49`; `` for none."""
    if not rfc3339:
        return ""
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    if rfc3339[:10] == day:
        return rfc3339[11:19]
    try:
        at = datetime.fromisoformat(rfc3339[:19])
    except ValueError:
        return rfc3339[:19].replace("T", " ")
    return at.strftime("%b %d %H:%M:%S")


def duration(ms: float | None) -> str:
    """`1234` -> `1.2 s`, `95000` -> `1 min 35 s`; None (or NaN) -> `—`."""
    if ms is None or pd.isna(ms):
        return "—"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def ago(ms: float) -> str:
    """How long ago, coarsely: `4 s`, `15 min`, `2 h 5 min`, `3 d 4 h`."""
    s = max(0, round(ms / 1000))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def share(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}" if x in (0, 1) else f"{x:.1%}"


def ts(ms: Any) -> pd.Series | pd.Timestamp:
    """Milliseconds since the epoch (scalar or Series) as UTC pandas timestamps."""
    return pd.to_datetime(ms, unit="ms", utc=True)


def rfc3339(text: str | None) -> pd.Timestamp | None:
    return None if not text else pd.Timestamp(text)


def md(text: object) -> str:
    """Text from the bus (types, ids, subjects, errors) to put into Markdown as it is: an
    inline code span, fenced by more backticks than any run of them inside. Nothing in a
    code span is read as Markdown: no link (not even a bare URL, which GitHub-flavoured
    Markdown links however escaped), emphasis, colour, LaTeX or emoji. Line breaks become
    spaces; empty text stays empty."""
    text = " ".join(str(text).splitlines())
    if not text:
        return ""
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    pad = " " if text[0] in "` " or text[-1] in "` " else ""  # one space each side is dropped
    return f"{fence}{pad}{text}{pad}{fence}"


def blank_missing(df: pd.DataFrame) -> pd.DataFrame:
    """The table with missing text (None, NaN in a column of text or links) as empty cells:
    Streamlit writes a grey "None" for them, which reads as a value."""
    out = df.copy()
    for name in out.columns:
        column = out[name]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            out[name] = column.where(column.notna(), "")
    return out
