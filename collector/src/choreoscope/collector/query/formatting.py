"""Readable, aligned text tables for the CLI query commands (what `--json` is not)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from choreoscope.instrumentation._clock import epoch_us

# A polled figure (outbox source, consumer lag) older than this many poll intervals is stale:
# the CLI and the dashboard say so alike.
STALE_POLLS = 3

Column = tuple[str, Callable[[dict[str, Any]], Any]]

MAX_CELL = 60


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as a left-aligned table with a header line; numbers are right-aligned. Cells are
    cut at MAX_CELL characters, except in the last column (usually the detail worth reading)."""
    last = len(columns) - 1
    cells = [[_cell(get(r), None if i == last else MAX_CELL) for i, (_, get) in enumerate(columns)]
             for r in rows]
    numeric = [all(_is_number(get(r)) for r in rows)
               and any(get(r) is not None for r in rows) for _, get in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([h for h, _ in columns])] + [line(c) for c in cells])


def flows_table(flows: Sequence[dict[str, Any]]) -> str:
    return table(flows, [
        ("CORRELATION ID", lambda f: f["correlation_id"]),
        ("STATUS", lambda f: f["status"]),
        ("STARTED", lambda f: f["started_at"]),
        ("DURATION", lambda f: _duration(f["duration_ms"])),
        ("EVENTS", lambda f: f["event_count"]),
        ("ANOMALIES", lambda f: f["anomaly_count"]),
        ("VARIANT", lambda f: f["variant"]),
    ])


def flow_detail(flow: dict[str, Any]) -> str:
    head = [
        f"flow        {_clean(flow['correlation_id'])}",
        f"status      {flow['status']}",
        f"started     {flow['started_at']}",
        f"last seen   {flow['last_seen_at']}  ({_duration(flow['duration_ms'])})",
        f"events      {flow['event_count']} ({len(flow['events'])} records)",
        f"services    {_clean(', '.join(flow['services'])) or '-'}",
        f"traces      {_clean(', '.join(flow['trace_ids'])) or '-'}",
        f"variant     {_clean(flow['variant']) or '-'}",
    ]
    events = "EVENTS\n" + table(flow["events"], [
        ("CE_TIME", lambda e: e["time"]),  # as its producer wrote it, not the bus's
        ("TYPE", lambda e: e["type"]),
        ("SOURCE", lambda e: e["source"]),
        ("SUBJECT", lambda e: e["subject"]),
        ("ID", lambda e: e["id"]),
        ("CAUSED BY", lambda e: e["causation_id"]),
        ("AT", lambda e: f"{e['topic']}/{e['partition']}/{e['offset']}"),
        ("NOTE", lambda e: _event_note(e)),
    ]) if flow["events"] else "EVENTS\nnone reached the bus"
    parts = ["\n".join(head), events]
    if flow["spans"]:
        parts.append("SPANS\n" + table(flow["spans"], [
            ("START", lambda s: s["start"]),
            ("NAME", lambda s: s["name"]),
            ("KIND", lambda s: s["kind"]),
            ("SERVICE", lambda s: s["service"]),
            ("GROUP", lambda s: s["group"]),
            ("MS", lambda s: s["duration_ms"]),
            ("STATUS", lambda s: s["status"]),
        ]))
    if flow["anomalies"]:
        parts.append("ANOMALIES\n" + anomalies_table(flow["anomalies"]))
    return "\n\n".join(parts)


def anomalies_table(anomalies: Sequence[dict[str, Any]]) -> str:
    return table(anomalies, [
        ("DETECTED", lambda a: a["detected_at"]),
        ("KIND", lambda a: a["kind"]),
        ("SUBKIND", lambda a: a["subkind"]),
        ("FLOW", lambda a: a["correlation_id"]),
        ("SUBJECT", lambda a: a["subject"]),
        ("DETAIL", lambda a: a["detail"]),
    ])


def outbox_table(sources: Sequence[dict[str, Any]], *, now_ms: int | None = None,
                 poll_s: float | None = None) -> str:
    """The sources, their stuck rows; with `now_ms` and the collectors' `poll_s`, a source
    last polled more than `STALE_POLLS` intervals ago is STALE (no collector polls it any
    more: stopped, or no longer given it), its figures those of its last poll."""
    def polled_ago_ms(s: dict[str, Any]) -> int | None:
        us = epoch_us(s.get("last_poll_at") or "")
        return None if us is None or now_ms is None else now_ms - us // 1000

    def stale(s: dict[str, Any]) -> bool:
        if "stale" in s:  # as `outbox_status` judged it
            return bool(s["stale"])
        ago = polled_ago_ms(s)
        return ago is not None and poll_s is not None and ago > STALE_POLLS * poll_s * 1000

    summary = table(sources, [
        ("SOURCE", lambda s: s["source"]),
        ("TABLE", lambda s: s["table"]),
        ("STATE", lambda s: "UNREACHABLE" if not s["reachable"] else "STALE" if stale(s)
         else "ok"),
        ("PENDING", lambda s: s["pending"]),
        ("DEAD", lambda s: s["dead"]),
        ("OLDEST PENDING", lambda s: _age(s["oldest_pending_age_s"])),
        ("LAG P95", lambda s: _ms(s["publish_lag_p95_ms"])),
        ("STUCK OR DEAD", lambda s: len(s["stuck"])),  # the rows listed below
        ("LAST OK", lambda s: s["last_ok_at"] or "never"),
    ])
    parts = [summary]
    for s in sources:
        if not s["reachable"]:
            parts.append(f"{_clean(s['source'])}: unreachable: {_clean(s['last_error'] or '?')}")
        if stale(s):
            parts.append(f"{_clean(s['source'])}: stale: last polled "
                         f"{_duration(polled_ago_ms(s) or 0)} ago ({s['last_poll_at']}), though "
                         f"collectors poll every {poll_s:g} s: none polls it now (stopped, or "
                         "no longer given this --outbox)")
    stuck = [dict(r, source=s["source"]) for s in sources for r in s["stuck"]]
    if stuck:
        parts.append("STUCK ROWS\n" + table(stuck, [
            ("SOURCE", lambda r: r["source"]),
            ("ID", lambda r: r["id"]),
            ("STATUS", lambda r: r.get("status")),
            ("TYPE", lambda r: r["type"]),
            ("AGGREGATE", lambda r: f"{r['aggregatetype']}/{r['aggregateid']}"),
            ("ATTEMPTS", lambda r: r["attempts"]),
            ("AGE", lambda r: _age(r["age_s"])),
            ("FLOW", lambda r: r["correlation_id"]),
            ("LAST ERROR", lambda r: r["last_error"]),
        ]))
    return "\n\n".join(parts)


def graph_table(g: dict[str, Any]) -> str:
    return table(g["edges"], [
        ("SOURCE", lambda e: e["source"]),
        ("EDGE", lambda e: e["kind"]),
        ("TARGET", lambda e: e["target"]),
        ("COUNT", lambda e: e["count"]),
        ("P50", lambda e: _ms(e["p50_ms"])),
        ("P95", lambda e: _ms(e["p95_ms"])),
        ("ANOMALIES", lambda e: e.get("anomaly_count", 0)),
    ])


def _event_note(e: dict[str, Any]) -> str:
    notes = ["duplicate"] if e.get("duplicate") else []
    notes += [str(p) for p in e.get("problems") or []]
    return ", ".join(notes)


def _cell(value: Any, limit: int | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) else _clean(str(value))
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str:
    """Control characters (ANSI escapes, line breaks) shown harmlessly, not interpreted."""
    return "".join(c if unicodedata.category(c)[0] != "C" else "?" for c in text)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else _duration(int(seconds * 1000))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
