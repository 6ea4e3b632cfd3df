"""Aggregates the dashboard needs beyond the CLI's queries, computed in SQL and paged.

Every function only reads the store and returns plain values (ints in ms, dicts, lists), never
a whole table: each query aggregates or pages in the database so the dashboard stays fast on
a store of millions of events. `open_readonly(url)` opens the store so that it cannot write.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import bindparam, create_engine, event, text

from ..reconstruct import skip
from ..reconstruct.graph import CONSUMED_BY, EMITS, percentile
from ..store import Store
from ..store.engine import StoreError
from ..store.engine import sqlite_file as sqlite_path
from ..store.masking import mask_secrets, mask_url
from . import intervals
from ._convert import has_nul, json_list, json_or
from .anomalies import anomaly_json


def read_failure(url: str, message: str) -> str:
    """`message` (why the store at `url` could not be read), with what to do when it is
    SQLite refusing a reader that may not write beside the store: SQLite reads a WAL store
    through its `-wal` and `-shm` files, which a reader must create when no collector has
    the store open."""
    path = sqlite_path(url)
    if path is None or not ("readonly database" in message
                            or "unable to open database file" in message):
        return message
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK) or os.path.exists(path + "-shm"):
        return message
    return (f"{message} (a SQLite store is read through {os.path.basename(path)}-wal and -shm "
            f"beside it, which this user cannot create in {folder}: read it while the "
            f"collector runs, or as a user who may write there)")


def open_readonly(url: str) -> Store:
    """The store at `url`, opened so that no statement can write to it.

    SQLite opens the file with `mode=ro`; PostgreSQL sessions start with
    `default_transaction_read_only=on`. A SQLite file that does not exist raises
    FileNotFoundError instead of being created.
    """
    store = Store(url, readonly=True)
    store.engine.dispose()
    path = sqlite_path(url)
    if store.dialect == "sqlite" and path is not None:
        absolute = os.path.abspath(path)
        if not os.path.exists(absolute):
            raise FileNotFoundError(f"expected a store database at {absolute}, got no such file")
        engine = create_engine(
            f"sqlite:///file:{absolute}?mode=ro&uri=true",
            connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA query_only=ON")
            cur.close()

        store.engine = engine
    elif store.dialect == "postgresql":
        store.engine = create_engine(
            store.url, pool_pre_ping=True, hide_parameters=True,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    return store


def has_tables(store: Store) -> bool:
    """Whether the store has been created by a collector (its `events` table exists).

    Raises `StoreError` when the database holds someone else's tables: one of ours that the
    queries read missing, or without our columns (the collector's own check,
    `Store.check_columns`). Connection errors propagate: an unreachable store is not an
    empty one."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoSuchTableError

    if not inspect(store.engine).has_table("events"):
        return False
    try:
        store.check_columns(reading=True)
    except NoSuchTableError as exc:
        raise StoreError(f"expected the store's tables to be Choreoscope's, but it has no table "
                         f"{exc}: use another database (or SQLite file)") from exc
    return True


def _rows(store: Store, sql: str, **params: Any) -> list[dict[str, Any]]:
    if has_nul(*params.values()):  # a filter no stored text can match (PostgreSQL refuses it)
        return []
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def overview(store: Store, *, now_ms: int, window_ms: int = 3_600_000) -> dict[str, Any]:
    """The overview's numbers: events, trace coverage, anomalies by kind (and the events
    with a duplicate anomaly, `duplicated_events`), outbox, lag, the
    spans the OTLP receiver had to drop (`otlp_spans_dropped`), and when the flows were last
    analysed and how long that pass took (`analysed_at_ms`, `analysis_s`; None before), and
    when a pass last ran, skipped or not (`analysis_checked_at_ms`: the flows stand as of
    then; None before); the collector's analysis interval (`analyze_s`, as it recorded it).
    The outbox figures are as of `outbox_as_of_ms` (the oldest source's last good poll), the
    lag as of `lag_measured_at_ms`; `outbox_never_measured` sources have had no good poll
    yet, so no figures.

    `events_per_minute` covers the `window_ms` before `window_end_ms` by store time (index
    range scans), as `[{minute_ms, count}]`, zero minutes included. The window ends at
    `now_ms`, or at the last stored event when nothing arrived within the window.
    """
    with store.engine.connect() as conn:
        first_seen, last_seen = conn.execute(
            text("SELECT min(observed_at_ms), max(observed_at_ms) FROM events")).one()
        end = now_ms if last_seen is None or last_seen >= now_ms - window_ms else int(last_seen)
        since = end - window_ms
        last_5 = conn.execute(text("SELECT count(*) FROM events WHERE observed_at_ms >= :t"),
                              {"t": now_ms - 300_000}).scalar_one()
        total = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
        untraced = conn.execute(
            text("SELECT count(*) FROM events WHERE trace_id IS NULL")).scalar_one()
        kinds = {k: int(n) for k, n in conn.execute(
            text("SELECT kind, count(*) FROM anomalies GROUP BY kind"))}
        # an event published twice and delivered twice is two anomalies, one event
        duplicated = conn.execute(text(
            "SELECT count(DISTINCT event_id) FROM anomalies WHERE kind = 'duplicate'")
        ).scalar_one() if kinds.get("duplicate") else 0
        outbox = conn.execute(text(
            "SELECT coalesce(sum(pending), 0), max(oldest_pending_age_s), count(*),"
            " coalesce(sum(CASE WHEN reachable THEN 0 ELSE 1 END), 0),"
            " coalesce(sum(dead), 0), min(last_ok_ms),"
            " coalesce(sum(CASE WHEN last_ok_ms IS NULL THEN 1 ELSE 0 END), 0)"
            " FROM outbox_sources")).one()
        lag = conn.execute(text(
            "SELECT coalesce(sum(lag), 0), count(DISTINCT group_name), max(measured_at_ms)"
            " FROM consumer_lag")).one()
        per_minute = {int(m): int(c) for m, c in conn.execute(text(
            "SELECT observed_at_ms - observed_at_ms % 60000 AS m, count(*) FROM events"
            " WHERE observed_at_ms >= :since AND observed_at_ms <= :now GROUP BY m"),
            {"since": since, "now": end})}
        dropped = conn.execute(text("SELECT value FROM meta WHERE key = :k"),
                               {"k": "otlp.spans_dropped"}).scalar()
        analysed = skip.last_pass(conn.execute(text("SELECT value FROM meta WHERE key = :k"),
                                               {"k": skip.STATE_KEY}).scalar())
        checked = skip.checked_at(conn.execute(text("SELECT value FROM meta WHERE key = :k"),
                                               {"k": skip.CHECKED_KEY}).scalar())
        analyze_s = intervals.recorded(conn).analyze_s
    first_minute = since - since % 60000
    minutes = [{"minute_ms": m, "count": per_minute.get(m, 0)}
               for m in range(first_minute, end + 1, 60000)]
    return {
        "events_total": int(total),
        "events_traced": int(total) - int(untraced),
        "traced_share": (int(total) - int(untraced)) / int(total) if total else None,
        "anomalies_by_kind": kinds,
        "duplicated_events": int(duplicated),
        "outbox_pending": int(outbox[0]),
        "outbox_oldest_pending_age_s": outbox[1],
        "outbox_sources": int(outbox[2]),
        "outbox_unreachable": int(outbox[3]),
        "outbox_dead": int(outbox[4]),
        "outbox_as_of_ms": None if outbox[5] is None else int(outbox[5]),
        "outbox_never_measured": int(outbox[6]),
        "consumer_lag": int(lag[0]),
        "consumer_groups": int(lag[1]),
        "lag_measured_at_ms": lag[2],
        "events_per_minute": minutes,
        "window_end_ms": end,
        "events_last_5_min": int(last_5),
        "last_event_ms": last_seen,
        "first_event_ms": first_seen,
        "otlp_spans_dropped": int(dropped) if dropped and str(dropped).isdigit() else 0,
        "analysed_at_ms": analysed[0] if analysed else None,
        "analysis_s": analysed[1] if analysed else None,
        "analysis_checked_at_ms": max(filter(None, (checked, analysed and analysed[0])),
                                      default=None),
        "analyze_s": analyze_s,
    }


def anomalies_per_minute(store: Store, *, kind: str | None = None,
                         since_ms: int | None = None) -> list[dict[str, Any]]:
    """Anomalies per detection minute and kind: `[{minute_ms, kind, count}]`."""
    where: list[str] = ["1=1"]
    params: dict[str, Any] = {}
    if kind:
        where.append("kind = :kind")
        params["kind"] = kind
    if since_ms is not None:
        where.append("detected_at_ms >= :since")
        params["since"] = since_ms
    return _rows(store, "SELECT detected_at_ms - detected_at_ms % 60000 AS minute_ms, kind,"
                 " count(*) AS count FROM anomalies WHERE " + " AND ".join(where)
                 + " GROUP BY minute_ms, kind ORDER BY minute_ms", **params)


BUCKETS_MS = (60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000)


def anomalies_over_time(store: Store, *, kind: str, subkind: str | None = None,
                        group: str | None = None, subject: str | None = None,
                        points: int = 120) -> dict[str, Any]:
    """Anomalies of `kind` (and of `subkind`, consumer `group`, `subject` when given) per time
    bucket, the bucket (1 min .. 1 day) chosen so their whole detection range fits in about
    `points` bars: `{bucket_ms, rows: [{at_ms, count}]}`."""
    if has_nul(kind, subkind, group, subject):
        return {"bucket_ms": BUCKETS_MS[0], "rows": []}
    clause, params = _anomaly_filter(kind, group=group, subject=subject, subkind=subkind)
    with store.engine.connect() as conn:
        low, high = conn.execute(text("SELECT min(detected_at_ms), max(detected_at_ms)"
                                      f" FROM anomalies WHERE {clause}"), params).one()
    if low is None:
        return {"bucket_ms": BUCKETS_MS[0], "rows": []}
    span = int(high) - int(low)
    bucket = next((b for b in BUCKETS_MS if span / b <= points), BUCKETS_MS[-1])
    rows = _rows(store, "SELECT detected_at_ms - detected_at_ms % :b AS at_ms, count(*) AS count"
                 f" FROM anomalies WHERE {clause} GROUP BY at_ms ORDER BY at_ms",
                 b=bucket, **params)
    return {"bucket_ms": bucket, "rows": rows}


def _anomaly_filter(kind: str, *, group: str | None = None, subject: str | None = None,
                    subkind: str | None = None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (values bound, never spliced) for anomalies of `kind` and, for each
    non-empty filter, of that consumer group, subject and subkind."""
    where, params = ["kind = :kind"], {"kind": kind}
    for column, value, name in (("group_name", group, "grp"), ("subject", subject, "subj"),
                                ("subkind", subkind, "sub")):
        if value:
            where.append(f"{column} = :{name}")
            params[name] = value
    return " AND ".join(where), params


def _anomaly(row: dict[str, Any]) -> dict[str, Any]:
    """`anomaly_json` plus the row id and the raw detection time, for charts and paging."""
    return {**anomaly_json(row), "id": row["id"], "detected_at_ms": row["detected_at_ms"]}


def flow_anomalies(store: Store, correlation_id: str) -> list[dict[str, Any]]:
    """The anomalies of one flow, oldest first, with their `extra` JSON parsed."""
    rows = _rows(store, "SELECT * FROM anomalies WHERE correlation_id = :cid"
                 " ORDER BY detected_at_ms, id", cid=correlation_id)
    return [_anomaly(r) for r in rows]


def out_of_order_groups(store: Store, *, group: str | None = None, subject: str | None = None,
                        subkind: str | None = None) -> list[dict[str, Any]]:
    """Out-of-order arrivals per consumer group, subkind and subject, filtered like
    `out_of_order`: `[{group, subkind, subject, count, last_detected_ms}]`, the 100 most
    frequent first."""
    if has_nul(group, subject, subkind):
        return []
    clause, params = _anomaly_filter("out_of_order", group=group, subject=subject,
                                     subkind=subkind)
    return _rows(store, "SELECT group_name AS \"group\", subkind, subject, count(*) AS count,"
                 f" max(detected_at_ms) AS last_detected_ms FROM anomalies WHERE {clause}"
                 " GROUP BY group_name, subkind, subject"
                 " ORDER BY count DESC, group_name, subject LIMIT :limit", limit=100, **params)


def out_of_order(store: Store, *, group: str | None = None, subject: str | None = None,
                 subkind: str | None = None, limit: int = 100, offset: int = 0,
                 ids: list[int] | None = None) -> dict[str, Any]:
    """One page of out-of-order anomalies, newest first, with `extra` parsed and the
    `trace_id` of the late event (None when it carried none): `{total, rows}`. With `ids`,
    only the anomalies of those ids (that match the filters)."""
    if has_nul(group, subject, subkind):
        return {"total": 0, "rows": []}
    clause, params = _anomaly_filter("out_of_order", group=group, subject=subject,
                                     subkind=subkind)
    if ids is not None:
        wanted = sorted({int(i) for i in ids})
        clause += f" AND id IN ({', '.join(str(i) for i in wanted) or 'NULL'})"
    with store.engine.connect() as conn:
        total = conn.execute(text(f"SELECT count(*) FROM anomalies WHERE {clause}"),
                             params).scalar_one()
        rows = conn.execute(text(
            "SELECT p.*, (SELECT min(e.trace_id) FROM events e"
            "             WHERE e.event_id = p.event_id) AS trace_id"
            f" FROM (SELECT * FROM anomalies WHERE {clause}"
            "       ORDER BY detected_at_ms DESC, id DESC LIMIT :limit OFFSET :offset) p"
            " ORDER BY p.detected_at_ms DESC, p.id DESC"),
            {**params, "limit": int(limit), "offset": int(offset)}).mappings().all()
    return {"total": int(total),
            "rows": [{**_anomaly(dict(r)), "trace_id": r["trace_id"]} for r in rows]}


def existing_flows(store: Store, correlation_ids: list[str]) -> set[str]:
    """Those of `correlation_ids` that have a flow (an outbox row that never reached the
    bus has none)."""
    wanted = sorted({c for c in correlation_ids if c and not has_nul(c)})
    if not wanted:
        return set()
    query = text("SELECT correlation_id FROM flows WHERE correlation_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(query, {"ids": wanted})}


def consumer_lag(store: Store) -> list[dict[str, Any]]:
    """Lag per consumer group and topic (summed over partitions), largest first."""
    return _rows(store, "SELECT group_name AS \"group\", topic, sum(lag) AS lag,"
                 " count(*) AS partitions, max(measured_at_ms) AS measured_at_ms"
                 " FROM consumer_lag GROUP BY group_name, topic ORDER BY lag DESC, group_name,"
                 " topic LIMIT 200")


def variants(store: Store, *, limit: int = 200) -> dict[str, Any]:
    """Distinct paths with count, share and duration percentiles, most common first.

    `{total_flows, variants: [{variant, count, share, p50_ms, p95_ms, max_ms}],
    flows_without_events}`, nearest-rank percentiles, exact. One ordered scan of
    `ix_flows_variant_duration` returns each distinct (variant, duration) with its count, so
    no flow row is read and nothing is sorted. Flows known only from dead outbox rows have no
    event, hence no variant: they are not in `total_flows`, but counted apart.
    """
    hist: dict[str, list[tuple[int, int]]] = {}
    with store.engine.connect() as conn:
        for variant, duration, n in conn.execute(text(
                "SELECT variant, duration_ms, count(*) FROM flows WHERE variant <> ''"
                " GROUP BY variant, duration_ms ORDER BY variant, duration_ms")):
            hist.setdefault(variant, []).append((int(duration), int(n)))
        eventless = conn.execute(text("SELECT count(*) FROM flows WHERE variant = ''")
                                 ).scalar_one()
    total = sum(n for pairs in hist.values() for _, n in pairs)
    rows: list[dict[str, Any]] = []
    for variant, pairs in hist.items():
        count = sum(n for _, n in pairs)
        rows.append({"variant": variant, "count": count,
                     "share": count / total if total else 0.0,
                     "p50_ms": _nearest_rank(pairs, count, 50),
                     "p95_ms": _nearest_rank(pairs, count, 95),
                     "max_ms": pairs[-1][0]})
    rows.sort(key=lambda r: (-r["count"], r["variant"]))
    return {"total_flows": total, "variants": rows[:limit],
            "flows_without_events": int(eventless)}


def _nearest_rank(pairs: list[tuple[int, int]], count: int, pct: int) -> int:
    """The nearest-rank percentile of values given as sorted (value, how many) pairs."""
    rank = -(-count * pct // 100)
    seen = 0
    for value, n in pairs:
        seen += n
        if seen >= rank:
            return value
    return pairs[-1][0]


def event_health(store: Store, *, since_ms: int | None = None) -> dict[str, Any]:
    """Envelope problems, schema versions and untraced events per producer and event type.

    `{events, untraced_total, problems: [{source, type, problem, count}], schema_versions:
    [{type, schema_version, count}], untraced: [{source, type, count}]}`. Each part is one
    grouped query over a small partial index or an index alone, never the events table.
    """
    where, params = "", {}
    if since_ms is not None:
        where, params = " AND observed_at_ms >= :since", {"since": since_ms}
    with store.engine.connect() as conn:
        total = int(conn.execute(text("SELECT count(*) FROM events WHERE 1=1" + where),
                                 params).scalar_one())
    found = _rows(store, "SELECT source, type, problems, count(*) AS n FROM events"
                  f" WHERE problems IS NOT NULL{where} GROUP BY source, type, problems",
                  **params)
    problems: dict[tuple[Any, Any, str], int] = {}
    for r in found:
        for p in json_list(r["problems"]):
            key = (r["source"], r["type"], str(p).split(":", 1)[0].strip())
            problems[key] = problems.get(key, 0) + int(r["n"])
    if since_ms is None:
        versions = schema_versions(store)
    else:
        versions = _rows(store, "SELECT type, schema_version, count(*) AS count FROM events"
                         f" WHERE 1=1{where} GROUP BY type, schema_version"
                         " ORDER BY type, schema_version", **params)
    hint = " INDEXED BY ix_events_untraced" if store.dialect == "sqlite" and _has_index(
        store, "ix_events_untraced") else ""
    untraced = _rows(store, f"SELECT source, type, count(*) AS count FROM events{hint}"
                     f" WHERE trace_id IS NULL{where} GROUP BY source, type", **params)
    for r in (*versions, *untraced):
        r["count"] = None if r["count"] is None else int(r["count"])
    return {
        "events": total,
        "untraced_total": sum(r["count"] for r in untraced),
        "problems": sorted(({"source": s, "type": t, "problem": p, "count": n}
                            for (s, t, p), n in problems.items()),
                           key=lambda d: (-d["count"], str(d["source"]), str(d["type"]))),
        "schema_versions": versions,
        "untraced": sorted(untraced, key=lambda d: (-d["count"], str(d["source"]),
                                                    str(d["type"]))),
    }


def schema_versions(store: Store) -> list[dict[str, Any]]:
    """Schema versions in use per event type: `[{type, schema_version, count}]`.

    The distinct (type, version) pairs are found by skipping through the index
    (`ix_events_type_version`): a few probes per pair, whatever the number of events. Events
    are counted only for types that use more than one version (the mix is what matters);
    `count` is None for a type's only version.
    """
    out: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        def one(sql: str, **p: Any) -> Any:
            return conn.execute(text(sql), p).scalar()

        types: list[str | None] = []
        if one("SELECT 1 FROM events WHERE type IS NULL LIMIT 1"):
            types.append(None)
        t = one("SELECT min(type) FROM events")
        while t is not None:
            types.append(t)
            t = one("SELECT min(type) FROM events WHERE type > :t", t=t)
        for t in types:
            same = "type IS NULL" if t is None else "type = :t"
            found: list[str | None] = []
            if one(f"SELECT 1 FROM events WHERE {same} AND schema_version IS NULL LIMIT 1",
                   t=t):
                found.append(None)
            v = one(f"SELECT min(schema_version) FROM events WHERE {same}", t=t)
            while v is not None:
                found.append(v)
                v = one(f"SELECT min(schema_version) FROM events WHERE {same}"
                        " AND schema_version > :v", t=t, v=v)
            counts: dict[Any, int] = {}
            if len(found) > 1:
                counts = {ver: int(n) for ver, n in conn.execute(text(
                    f"SELECT schema_version, count(*) FROM events WHERE {same}"
                    " GROUP BY schema_version"), {"t": t})}
            out.extend({"type": t, "schema_version": ver, "count": counts.get(ver)}
                       for ver in found)
    return out


def _has_index(store: Store, name: str) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'index'"
                                 " AND name = :n"), {"n": name}).first() is not None


def flow_headers(store: Store, correlation_id: str) -> dict[str, dict[str, Any]]:
    """The stored record headers of a flow's events, keyed `"topic/partition/offset"`."""
    rows = _rows(store, "SELECT topic, \"partition\", \"offset\", headers FROM events"
                 " WHERE flow_id = :cid LIMIT 5000", cid=correlation_id)
    return {f"{r['topic']}/{r['partition']}/{r['offset']}": json_or(r["headers"], {})
            for r in rows}


def graph_window(store: Store, *, since_ms: int) -> dict[str, Any]:
    """The choreography graph learned from the events stored since `since_ms` only.

    Same shape as `query.graph()`: emits edges from producers to event types with counts and
    p50/p95 of the reaction time (effect's broker timestamp - start of the producer's CONSUMER
    span processing its cause, the last to start before the publish); consumed_by edges from
    event types to the services whose CONSUMER spans processed them, with p50/p95 of (span
    start - broker timestamp) in ms; `anomaly_count` per edge. As in the learned graph, emits
    edges count distinct events (a duplicate publish of an event id adds neither a count nor
    a reaction time: its first publish is timed; a record without an event id counts on its
    own) and consumed_by edges count each CONSUMER span once, timed from the first publish
    of its event; the `receive` half OpenTelemetry's own Kafka instrumentation adds beside
    a processing of ours is not counted (`reconstruct.flows.without_receive_halves`).
    Percentiles are the learned graph's own (`reconstruct.graph.percentile`), and anomalies
    sit on the edges the learned graph puts them on (`edge_anomalies`, those detected since
    `since_ms`), so a window over all traffic gives its figures.
    """
    hot = edge_anomalies(store, since_ms=since_ms)
    emits = _rows(store, "SELECT source, type, count(DISTINCT nullif(event_id, ''))"
                  " + sum(CASE WHEN coalesce(event_id, '') = '' THEN 1 ELSE 0 END) AS n"
                  " FROM events WHERE observed_at_ms >= :since AND source IS NOT NULL"
                  " AND type IS NOT NULL GROUP BY source, type", since=since_ms)
    consumed = _rows(store, "SELECT e.type AS type, s.service AS service, s.start_us / 1000"
                     " - min(coalesce(e.broker_ts_ms, e.observed_at_ms)) AS lat"
                     " FROM events e JOIN spans s ON s.message_id = e.event_id"
                     " WHERE e.observed_at_ms >= :since AND s.kind = 'consumer'"
                     " AND e.type IS NOT NULL AND s.service IS NOT NULL" + _NOT_RECEIVE_HALF +
                     " GROUP BY s.trace_id, s.span_id, e.type, s.service, s.start_us"
                     " LIMIT 200000", since=since_ms)
    reacted = _rows(store, "SELECT e.source AS source, e.type AS type, e.event_id AS event_id,"
                    " e.topic AS topic, e.\"partition\" AS p, e.\"offset\" AS o,"
                    " coalesce(e.broker_ts_ms, e.observed_at_ms) AS pub,"
                    # from the processing that published it: the last to start by its
                    # publish, else (clocks apart) the first; as reconstruct/graph.py
                    " coalesce(e.broker_ts_ms, e.observed_at_ms) - coalesce(max(CASE WHEN"
                    " s.start_us / 1000 <= coalesce(e.broker_ts_ms, e.observed_at_ms)"
                    " THEN s.start_us / 1000 END), min(s.start_us) / 1000) AS lat"
                    " FROM events e JOIN spans s ON s.message_id = e.causation_id"
                    " AND s.service = e.source AND s.kind = 'consumer'"
                    " WHERE e.observed_at_ms >= :since AND e.type IS NOT NULL" + _NOT_RECEIVE_HALF +
                    " GROUP BY e.topic, e.\"partition\", e.\"offset\", e.event_id, e.source,"
                    " e.type, e.broker_ts_ms, e.observed_at_ms LIMIT 200000", since=since_ms)
    # per distinct event, the reaction of its first publish (of a duplicate publish, the
    # learned graph times the first record too)
    first: dict[tuple[str, str, str], tuple[int, int, float]] = {}
    for r in reacted:
        event = r["event_id"] or f"{r['topic']}/{r['p']}/{r['o']}"
        key = (r["source"], r["type"], event)
        record = (int(r["pub"]), int(r["o"]), float(r["lat"]))
        first[key] = min(first.get(key, record), record)
    reactions: dict[tuple[str, str], list[float]] = {}
    for (source, etype, _event), (_pub, _offset, lat) in first.items():
        reactions.setdefault((source, etype), []).append(lat)
    nodes: set[tuple[str, str]] = set()  # (id, kind): a service and a type may share a name
    edges: list[dict[str, Any]] = []
    for r in emits:
        nodes.update(((r["source"], "service"), (r["type"], "event_type")))
        lats = sorted(reactions.get((r["source"], r["type"]), ()))
        edges.append({"source": r["source"], "target": r["type"], "kind": "emits",
                      "count": int(r["n"]),
                      "p50_ms": percentile(lats, 50), "p95_ms": percentile(lats, 95),
                      "anomaly_count": hot.get((r["source"], r["type"], EMITS), 0)})
    latencies: dict[tuple[str, str], list[float]] = {}
    for r in consumed:
        latencies.setdefault((r["type"], r["service"]), []).append(float(r["lat"]))
    for (etype, service), lats in sorted(latencies.items()):
        nodes.update(((etype, "event_type"), (service, "service")))
        lats.sort()
        edges.append({"source": etype, "target": service, "kind": "consumed_by",
                      "count": len(lats), "p50_ms": percentile(lats, 50),
                      "p95_ms": percentile(lats, 95),
                      "anomaly_count": hot.get((etype, service, CONSUMED_BY), 0)})
    return {"nodes": [{"id": n, "kind": k} for n, k in sorted(nodes)], "edges": edges}


# A CONSUMER span `s` that is not the group-less `receive` half of a processing of ours.
_NOT_RECEIVE_HALF = (
    " AND (s.consumer_group IS NOT NULL OR NOT EXISTS (SELECT 1 FROM spans g"
    " WHERE g.message_id = s.message_id AND g.service = s.service AND g.kind = 'consumer'"
    " AND g.consumer_group IS NOT NULL))")


def edge_anomalies(store: Store, *, since_ms: int | None = None
                   ) -> dict[tuple[str, str, str], int]:
    """Anomalies per graph edge `(source, target, kind)`, as the learned graph counts them
    (analyze.py): an anomaly of a consumer group's processing on the `consumed_by` edge from
    its event's type to its service, one of a service without a group on that service's
    `emits` edge; only those detected since `since_ms` when given."""
    event_type = ("json_extract(extra, '$.type')" if store.engine.dialect.name == "sqlite"
                  else "(extra::json ->> 'type')")
    rows = _rows(store, f"SELECT {event_type} AS type, service, group_name AS grp,"
                 " count(*) AS n FROM anomalies WHERE service IS NOT NULL"
                 " AND extra IS NOT NULL AND detected_at_ms >= :since"
                 " GROUP BY 1, service, group_name",
                 since=-(1 << 62) if since_ms is None else since_ms)
    counts: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if not isinstance(r["type"], str) or not r["type"]:
            continue
        edge = ((r["type"], r["service"], CONSUMED_BY) if r["grp"]
                else (r["service"], r["type"], EMITS))
        counts[edge] = counts.get(edge, 0) + int(r["n"])
    return counts


__all__ = [
    "anomalies_over_time",
    "anomalies_per_minute",
    "consumer_lag",
    "edge_anomalies",
    "event_health",
    "existing_flows",
    "flow_anomalies",
    "flow_headers",
    "graph_window",
    "has_tables",
    "mask_secrets",
    "mask_url",
    "open_readonly",
    "out_of_order",
    "out_of_order_groups",
    "overview",
    "schema_versions",
    "sqlite_path",
    "variants",
]
