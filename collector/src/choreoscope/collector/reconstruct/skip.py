"""Skipping a pass that would change nothing: the store's inputs are unchanged since the
last pass (by any collector with the same options) and nothing is due by time alone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ..store import Store
from .flows import Dag, Flow, unsampled

STATE_KEY = "analysis.state"  # meta row: the last pass's fingerprints, time and summary
# meta row: when a pass last ran, skipped or not (epoch ms). The flows are as of then: a
# skipped pass found nothing to change. Readers judge a running analysis by it.
CHECKED_KEY = "analysis.checked_at_ms"


def _analysis_code() -> str:
    """A digest of the code a pass runs (reconstruct/, detect/, analyze.py) and of the
    distribution's version. Part of the fingerprint: a collector whose analysis differs
    recomputes the flows after an upgrade instead of skipping until new data arrives (the
    version alone is not enough: it does not change with every release of the code)."""
    try:
        version = metadata.version("choreoscope-collector")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    digest = hashlib.sha256(version.encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted([*package.glob("reconstruct/*.py"), *package.glob("detect/*.py"),
                        package / "analyze.py"]):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError:  # installed without its sources: the version stands for them
            continue
    return f"{version}:{digest.hexdigest()[:16]}"


ANALYSIS_CODE = _analysis_code()


class Due:
    """The earliest future time at which a status or an anomaly can change by time alone."""

    def __init__(self) -> None:
        self.ms: int | None = None

    def at(self, ms: int) -> None:
        if self.ms is None or ms < self.ms:
            self.ms = ms


def trace_due(flow: Flow, dag: Dag, now_ms: int, grace_ms: int, due: Due) -> None:
    """Events whose missing trace becomes `untraced` (and the flow's trace unavailable) later."""
    present: set[str] | None = None
    for e in dag.nodes.values():
        if e.trace_id is None or e.observed_at_ms + grace_ms <= now_ms or unsampled(e):
            continue
        if present is None:
            present = flow.span_traces
        if e.trace_id not in present:
            due.at(e.observed_at_ms + grace_ms)


def one(raw: Any, sql: str) -> Any:
    """The first row of a small query (a plain client-side cursor)."""
    cur = raw.cursor()
    try:
        cur.execute(sql)
        return cur.fetchone()
    finally:
        cur.close()


def data_fingerprint(raw: Any, options: object,
                     dead: Mapping[str, Iterable[object]]) -> list[Any]:
    """What the pass reads, summarised: row counts and latest times of every input table,
    the dead outbox flows, the options and the analysis code (`ANALYSIS_CODE`). Taken before
    reading, so a change made while the pass runs shows as a difference next time."""
    return _plain([
        list(one(raw, "SELECT count(*), max(observed_at_ms) FROM events")),
        list(one(raw, "SELECT count(*), max(received_at_ms) FROM spans")),
        list(one(raw, "SELECT count(*), max(last_fetch_ms), sum(attempts) FROM trace_fetches")),
        hashlib.sha256("\n".join(sorted(
            f"{cid} {row!r}" for cid, rows in dead.items() for row in rows)).encode()).hexdigest(),
        repr(options),
        ANALYSIS_CODE,
    ])


def anomalies_fingerprint(raw: Any) -> list[Any]:
    """Count and latest id of the anomalies (others record some too: `stuck_outbox`)."""
    return _plain(list(one(raw, "SELECT count(*), max(id) FROM anomalies") or ()))


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def previous(store: Store, raw: Any, data_fp: list[Any], now_ms: int) -> dict[str, Any] | None:
    """The last pass's saved summary when it still holds: same inputs, same anomalies, not
    earlier than that pass, and nothing due yet."""
    try:
        state = json.loads(store.get_meta(STATE_KEY) or "null")
    except ValueError:
        return None
    if not isinstance(state, dict):
        return None
    if data_fp != state.get("data") or anomalies_fingerprint(raw) != state.get("anomalies"):
        return None
    last, due = state.get("now_ms"), state.get("next_due_ms")
    if not isinstance(last, int) or now_ms < last or (isinstance(due, int) and now_ms >= due):
        return None
    return state


def last_pass(text: str | None) -> tuple[int, float | None] | None:
    """(epoch ms, seconds it took) of the last full pass, from the text of its meta row;
    None before the first pass (or for a row this version cannot read)."""
    try:
        state = json.loads(text or "null")
    except ValueError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("now_ms"), int):
        return None
    took = state.get("elapsed_s")
    return state["now_ms"], float(took) if isinstance(took, int | float) else None


def save(store: Store, *, data_fp: list[Any], anomalies_fp: list[Any], now_ms: int,
         next_due_ms: int | None, summary: dict[str, Any]) -> None:
    """Remember this pass for the next one."""
    store.set_meta(STATE_KEY, json.dumps(dict(summary, data=data_fp, anomalies=anomalies_fp,
                                              now_ms=now_ms, next_due_ms=next_due_ms),
                                         default=str))
    checked(store, now_ms)


def checked(store: Store, now_ms: int) -> None:
    """Record that a pass ran at `now_ms` (`CHECKED_KEY`)."""
    store.set_meta(CHECKED_KEY, str(now_ms))


def checked_at(text: str | None) -> int | None:
    """The time of `CHECKED_KEY`'s text, None when missing or unreadable."""
    try:
        return int(text) if text else None
    except ValueError:
        return None
