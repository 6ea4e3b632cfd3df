"""Fetch from Jaeger the traces of the trace ids seen on the bus, on a schedule kept in the store.

`trace_fetches` holds one row per trace id found in `events.trace_id` (of sampled events:
a trace its producers did not sample is recorded nowhere):

- `pending`: not fetched yet; first fetch at `first_seen_ms + settle` (spans reach Jaeger
  some seconds after the event reaches the bus).
- `found`: spans stored (`span_count` = spans Jaeger returned last time). While the flow is
  active (an event for the trace within `refetch_while_active_s`), the trace is fetched again
  every `refetch_interval_s`, so late consumer spans are picked up; a new event for the trace
  schedules a fetch `settle_s` after it.
- `missing`: Jaeger has no such trace (yet); retried with backoff `attempts` times, then
  `next_fetch_ms = NEVER_MS` (until a new event for the trace arrives).
- `error`: Jaeger unreachable or failing (`last_error`); retried with backoff, forever.

How a flow's trace status is read from these rows (for the analysis, `trace_availability`):
`found` -> "available"; `pending`, or `missing`/`error` still being retried -> "pending"
("not yet available"); `missing` after the last attempt, or `error` after `max_attempts`
attempts -> "unavailable". A trace id with no row -> "none" (not seen by the fetcher yet).

Fetching never blocks bus ingest: run `run_once()` from its own thread (`start()`), and a pass
stops at the first "Jaeger unreachable" error and after `pass_budget_s` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select, update

from ..ingest.redact import Redactor
from ..store import Store
from ..store.schema import events, trace_fetches
from .jaeger import JaegerClient, JaegerError, JaegerUnavailable
from .model import Span, SpanFormatError
from .sink import SpanSink

log = logging.getLogger(__name__)

NEVER_MS = 2**62  # next_fetch_ms of a trace that needs no more fetching
_MESSAGING_KEYS = ("messaging.system", "messaging.message.id")
_SCAN_SLACK_MS = 120_000  # events committed late with an older observed_at_ms are still found
_IN_CHUNK = 500


def trace_availability(row: Mapping[str, Any] | None, *, max_attempts: int = 8) -> str:
    """"available" | "pending" | "unavailable" | "none" for one `trace_fetches` row."""
    if row is None:
        return "none"
    status = row["status"]
    if status == "found":
        return "available"
    if status == "pending":
        return "pending"
    if status == "missing":
        return "unavailable" if row["next_fetch_ms"] >= NEVER_MS else "pending"
    return "unavailable" if row["attempts"] >= max_attempts else "pending"


# Server errors (5xx) for this many traces in a row end a pass: Jaeger's storage is failing,
# not one trace, and every other due trace would only fail the same way.
_SERVER_ERRORS_IN_A_ROW = 3


class TraceFetcher:
    """Discovers trace ids on the bus (via the store) and stores their spans from Jaeger."""

    def __init__(
        self,
        store: Store,
        jaeger_url: str,
        *,
        settle_s: float = 5.0,
        refetch_while_active_s: float = 120.0,
        refetch_interval_s: float = 15.0,
        timeout_s: float = 5.0,
        search_services: bool = True,
        search_interval_s: float = 30.0,
        search_lookback_s: float = 300.0,
        search_limit: int = 100,
        max_attempts: int = 8,
        backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        batch_size: int = 200,
        pass_budget_s: float = 10.0,
        client: JaegerClient | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        for name, value in (("settle_s", settle_s), ("timeout_s", timeout_s),
                            ("backoff_s", backoff_s), ("search_interval_s", search_interval_s)):
            if value < 0:
                raise ValueError(f"expected {name} >= 0, got {value!r}")
        if max_attempts < 1 or batch_size < 1:
            raise ValueError(f"expected max_attempts and batch_size >= 1, "
                             f"got {max_attempts!r} and {batch_size!r}")
        self.store = store
        self.client = client or JaegerClient(jaeger_url, timeout_s=timeout_s)
        self.sink = SpanSink(store, redactor)
        self.settle_ms = int(settle_s * 1000)
        self.refetch_while_active_ms = int(refetch_while_active_s * 1000)
        self.refetch_interval_ms = int(refetch_interval_s * 1000)
        self.search_services = search_services
        self.search_interval_ms = int(search_interval_s * 1000)
        self.search_lookback_ms = int(search_lookback_s * 1000)
        self.search_limit = search_limit
        self.max_attempts = max_attempts
        self.backoff_ms = int(backoff_s * 1000)
        self.max_backoff_ms = int(max_backoff_s * 1000)
        self.batch_size = batch_size
        self.pass_budget_s = pass_budget_s
        self.last_error: str | None = None
        self.last_search_ms: int | None = None
        self._scan_from_ms: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- one pass ------------------------------------------------------------------------------

    def run_once(self, now_ms: int | None = None) -> int:
        """Discover new trace ids, fetch the due ones, search per service; returns spans stored."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.discover(now_ms)
        stored = self.fetch_due(now_ms)
        if self.search_services and (self.last_search_ms is None
                                     or now_ms - self.last_search_ms >= self.search_interval_ms):
            stored += self.search(now_ms)
        return stored

    def discover(self, now_ms: int) -> int:
        """Add `pending` rows for new trace ids in `events`; reschedule traces with new events."""
        query = (select(events.c.trace_id, func.min(events.c.observed_at_ms),
                        func.max(events.c.observed_at_ms))
                 .where(events.c.trace_id.is_not(None),
                        events.c.trace_sampled.is_not(False))  # no trace of it is recorded
                 .group_by(events.c.trace_id))
        if self._scan_from_ms is not None:
            query = query.where(events.c.observed_at_ms >= self._scan_from_ms)
        added = 0
        with self.store.engine.begin() as conn:
            seen = {tid: (int(lo), int(hi)) for tid, lo, hi in conn.execute(query)}
            if not seen:
                return 0
            known = self._rows(conn, seen)
            new_rows = [{"trace_id": tid, "first_seen_ms": lo, "last_event_ms": hi,
                         "next_fetch_ms": lo + self.settle_ms, "attempts": 0,
                         "status": "pending", "span_count": 0}
                        for tid, (lo, hi) in seen.items() if tid not in known]
            added = self.store.insert_ignore(conn, trace_fetches, new_rows)
            for tid, (_lo, hi) in seen.items():
                row = known.get(tid)
                if row is None or hi <= row["last_event_ms"]:
                    continue
                values: dict[str, Any] = {"last_event_ms": hi}
                if row["status"] in ("found", "missing"):
                    values["next_fetch_ms"] = min(row["next_fetch_ms"], hi + self.settle_ms)
                    if row["status"] == "missing":
                        values["attempts"] = 0
                elif row["status"] == "error":
                    values["next_fetch_ms"] = max(row["next_fetch_ms"], hi + self.settle_ms)
                conn.execute(update(trace_fetches)
                             .where(trace_fetches.c.trace_id == tid).values(**values))
            self._scan_from_ms = max(hi for _lo, hi in seen.values()) - _SCAN_SLACK_MS
        return added

    def fetch_due(self, now_ms: int) -> int:
        """Fetch the traces whose `next_fetch_ms` has come; returns spans stored."""
        due = self._due(now_ms, self.batch_size)
        return self._fetch(due, now_ms, time.monotonic() + self.pass_budget_s)

    def catch_up(self, now_ms: int | None = None, budget_s: float = 120.0) -> int:
        """A last pass, for `collect --once` (no later pass will come): discover, fetch every
        trace that would be due within the settle time, all batches, until `budget_s` is
        spent or Jaeger is unreachable, then search. Records read long after they were
        produced have their spans in Jaeger already; a trace not there yet is `missing` and
        retried by the next run. Returns spans stored."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.discover(now_ms)
        stored = self._fetch(self._due(now_ms + self.settle_ms), now_ms,
                             time.monotonic() + budget_s)
        if self.search_services:
            stored += self.search(now_ms)
        return stored

    def _due(self, by_ms: int, limit: int | None = None) -> list[dict[str, Any]]:
        """The `trace_fetches` rows due by `by_ms`, soonest first (at most `limit`)."""
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(trace_fetches).where(trace_fetches.c.next_fetch_ms <= by_ms)
                .order_by(trace_fetches.c.next_fetch_ms).limit(limit))]

    def _fetch(self, due: list[dict[str, Any]], now_ms: int, deadline: float) -> int:
        stored = 0
        failed: list[str] = []  # errors of single traces this pass: logged once, at its end
        server_errors = 0  # in a row
        for i, row in enumerate(due):
            if time.monotonic() > deadline:
                break
            try:
                spans = self.client.get_trace(row["trace_id"])
            except JaegerUnavailable as exc:
                # Jaeger is down: every trace of this pass waits, none blocks the pass further.
                self._failed(due[i:], str(exc), now_ms)
                break
            except JaegerError as exc:
                server_errors = server_errors + 1 if (exc.status or 0) >= 500 else 0
                if server_errors >= _SERVER_ERRORS_IN_A_ROW:
                    # Its storage fails every trace, not one: the rest wait for the backoff.
                    self._failed(due[i:], str(exc), now_ms)
                    break
                self._failed([row], str(exc), now_ms, quiet=True)
                failed.append(str(exc))
                continue
            except SpanFormatError as exc:  # not a trace id Jaeger could know: stop asking
                self._give_up(row["trace_id"], str(exc), now_ms)
                continue
            server_errors = 0
            stored += self._fetched(row, spans, now_ms)
        if failed:
            log.warning("Jaeger fetch failed for %d trace%s this pass (they back off): %s",
                        len(failed), "" if len(failed) == 1 else "s", failed[0])
        return stored

    def search(self, now_ms: int) -> int:
        """Search each service's recent traces (consumer spans of traces not seen on the bus)."""
        start_ms = (now_ms - self.search_lookback_ms if self.last_search_ms is None
                    else self.last_search_ms - self.search_interval_ms)
        self.last_search_ms = now_ms
        stored = 0
        try:
            for service in self.client.services():
                traces = self.client.find_traces(service, start_ms, now_ms, self.search_limit)
                stored += self._store_found(traces, now_ms)
        except JaegerError as exc:
            self.last_error = str(exc)
            log.warning("Jaeger search failed: %s", exc)
        return stored

    # --- bookkeeping ---------------------------------------------------------------------------

    def _rows(self, conn: Any, trace_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(trace_ids)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            for r in conn.execute(select(trace_fetches)
                                  .where(trace_fetches.c.trace_id.in_(ids[i:i + _IN_CHUNK]))):
                out[r.trace_id] = dict(r._mapping)
        return out

    def _fetched(self, row: dict[str, Any], spans: list[Span], now_ms: int) -> int:
        with self.store.engine.begin() as conn:
            current = self._rows(conn, [row["trace_id"]]).get(row["trace_id"], row)
            if spans:
                stored = self.sink.write(conn, spans, origin="jaeger", received_at_ms=now_ms)
                active = now_ms - current["last_event_ms"] < self.refetch_while_active_ms
                values: dict[str, Any] = {
                    "status": "found", "attempts": 0, "last_error": None,
                    "span_count": len({s.span_id for s in spans}),
                    "next_fetch_ms": now_ms + self.refetch_interval_ms if active else NEVER_MS,
                }
            else:
                stored = 0
                attempts = current["attempts"] + 1
                values = {"attempts": attempts, "last_error": None,
                          "next_fetch_ms": (NEVER_MS if attempts >= self.max_attempts
                                            else now_ms + self._backoff(attempts))}
                if current["status"] != "found":
                    values["status"] = "missing"
                elif attempts >= self.max_attempts or not (
                        now_ms - current["last_event_ms"] < self.refetch_while_active_ms):
                    values["next_fetch_ms"] = NEVER_MS
            values["last_fetch_ms"] = now_ms
            conn.execute(update(trace_fetches)
                         .where(trace_fetches.c.trace_id == row["trace_id"]).values(**values))
        return stored

    def _failed(self, rows: list[dict[str, Any]], error: str, now_ms: int, *,
                quiet: bool = False) -> None:
        self.last_error = error
        if not quiet:
            log.warning("Jaeger fetch failed (%d traces wait): %s", len(rows), error)
        with self.store.engine.begin() as conn:
            for row in rows:
                attempts = row["attempts"] + 1
                values: dict[str, Any] = {
                    "attempts": attempts, "last_error": error[:2000], "last_fetch_ms": now_ms,
                    "next_fetch_ms": now_ms + self._backoff(attempts),
                }
                if row["status"] != "found":
                    values["status"] = "error"
                conn.execute(update(trace_fetches)
                             .where(trace_fetches.c.trace_id == row["trace_id"]).values(**values))

    def _give_up(self, trace_id: str, error: str, now_ms: int) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(update(trace_fetches).where(trace_fetches.c.trace_id == trace_id)
                         .values(status="missing", attempts=self.max_attempts,
                                 next_fetch_ms=NEVER_MS, last_fetch_ms=now_ms,
                                 last_error=error[:2000]))

    def _store_found(self, traces: dict[str, list[Span]], now_ms: int) -> int:
        if not traces:
            return 0
        stored = 0
        with self.store.engine.begin() as conn:
            known = self._rows(conn, traces)
            for trace_id, spans in traces.items():
                messaging = any(k in s.attributes for s in spans for k in _MESSAGING_KEYS)
                if not messaging and trace_id not in known:
                    continue
                stored += self.sink.write(conn, spans, origin="jaeger", received_at_ms=now_ms)
                row = known.get(trace_id)
                if row is not None and row["status"] != "found":
                    conn.execute(update(trace_fetches)
                                 .where(trace_fetches.c.trace_id == trace_id)
                                 .values(status="found", attempts=0, last_error=None,
                                         span_count=len({s.span_id for s in spans})))
        return stored

    def _backoff(self, attempts: int) -> int:
        return int(min(self.max_backoff_ms, self.backoff_ms * 2 ** max(0, attempts - 1)))

    # --- background thread ---------------------------------------------------------------------

    def start(self, interval_s: float = 2.0) -> TraceFetcher:
        """Run `run_once` every `interval_s` in a daemon thread (errors logged, never raised)."""
        if self._thread is not None:
            raise RuntimeError("expected a stopped TraceFetcher, got one already running")
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:
                    log.exception("trace fetch pass failed")
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=loop, name="choreoscope-trace-fetcher",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
