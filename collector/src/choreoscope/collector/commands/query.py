"""`choreoscope flows | flow ID | anomalies | outbox | graph`: read the store, print tables or JSON.

They read only what the collector stored (statuses, anomalies, graph), so they need no
collector settings and agree with the dashboard. Exit codes: 0 ok, 1 unknown flow id or an
unusable store (with a hint on stderr, never a traceback or a password).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..detect.anomaly import KINDS

_HINT = ("run `choreoscope collect --bootstrap HOST:PORT` to fill it, "
         "or point --store / CHOREOSCOPE_STORE at the collector's store")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..query import FLOW_STATUSES

    p = sub.add_parser("flows", help="list flows, most recently active first")
    p.add_argument("--status", choices=FLOW_STATUSES, help="only flows in this status")
    p.add_argument("--limit", type=_positive, help="at most N flows")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, query="flows")

    p = sub.add_parser("flow", help="one flow: its events, spans and anomalies")
    p.add_argument("id", metavar="ID",
                   help="the flow's correlation id (or an event id or trace id of it)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, query="flow")

    p = sub.add_parser("anomalies", help="list detected anomalies, oldest first")
    p.add_argument("--kind", choices=KINDS, help="only anomalies of this kind")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, query="anomalies")

    p = sub.add_parser("outbox", help="outbox sources: backlog, lag, stuck and dead rows")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, query="outbox")

    p = sub.add_parser("graph", help="the choreography graph learned from traffic")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print JSON")
    how.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    p.set_defaults(func=run, query="graph")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ..outbox_monitor import scrub_error
    from ..query.dashboard import read_failure
    from ..store.masking import mask_url

    store = None
    try:
        store = _open(args.store)
        if store is None:
            return 1
        return _COMMANDS[args.query](store, args)
    except SQLAlchemyError as exc:
        print(f"choreoscope: cannot read the store {mask_url(args.store)}: "
              f"{read_failure(args.store, scrub_error(exc, args.store))}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.dispose()


def _open(url: str) -> Any:
    """The store at `url`, or None (after printing why) when there is none to read."""
    from ..store import Store, StoreError, check_url
    from ..store.engine import sqlite_file

    try:
        check_url(url)
    except StoreError as exc:
        print(f"choreoscope: {exc}", file=sys.stderr)
        return None
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        print(f"choreoscope: no store at {path}: {_HINT}", file=sys.stderr)
        return None
    return Store(url, readonly=True)


def _flows(store: Any, args: argparse.Namespace) -> int:
    from ..query import list_flows
    from ..query.formatting import flows_table

    flows = list_flows(store, status=args.status, limit=args.limit) if _ready(store) else []
    return _emit(args, flows, flows_table, lambda: _nothing(store, "no flows" + (
        f" with status {args.status}" if args.status else "")))


def _flow(store: Any, args: argparse.Namespace) -> int:
    from ..query import get_flow, resolve_flow_id
    from ..query.flows import flows_of_trace
    from ..query.formatting import flow_detail
    from ..query.outbox import stuck_outbox_rows

    # the flow's correlation id, or the id of one of its events or traces; pasted with the
    # spaces around it, as the dashboard's box takes it
    some_id = args.id.strip() or args.id
    flow_id = resolve_flow_id(store, some_id) if _ready(store) else None
    flow = get_flow(store, flow_id) if flow_id is not None else None
    if flow is None:
        print(f"choreoscope: no flow with correlation id, event id or trace id {some_id!r} "
              "(`choreoscope flows` lists them)", file=sys.stderr)
        for source, row in stuck_outbox_rows(store, some_id) if _ready(store) else ():
            print(f"choreoscope: outbox {source} holds its {row.get('status') or 'stuck'} row "
                  f"{row.get('id')} ({row.get('type')}, {row.get('attempts')} attempts): its "
                  "event never reached the bus (`choreoscope outbox` shows it)", file=sys.stderr)
        return 1
    others = [f for f in flows_of_trace(store, some_id) if f != flow_id]
    if others and flow_id != some_id:
        print(f"choreoscope: trace {some_id} holds {len(others) + 1} flows; showing "
              f"{flow_id!r}, the first published; the others: {', '.join(others)}",
              file=sys.stderr)
    return _emit(args, flow, flow_detail)


def _anomalies(store: Any, args: argparse.Namespace) -> int:
    from ..query import list_anomalies
    from ..query.formatting import anomalies_table

    found = list_anomalies(store, kind=args.kind) if _ready(store) else []
    return _emit(args, found, anomalies_table, lambda: _nothing(store, "no anomalies" + (
        f" of kind {args.kind}" if args.kind else "")))


def _outbox(store: Any, args: argparse.Namespace) -> int:
    from ..query import intervals, outbox_status
    from ..query.formatting import outbox_table

    poll_s = None
    sources = []
    if _ready(store):
        sources = outbox_status(store)
        with store.engine.connect() as conn:
            poll_s = intervals.recorded(conn).poll_s  # what the collector polls at
    table = functools.partial(outbox_table, now_ms=int(time.time() * 1000), poll_s=poll_s)
    return _emit(args, sources, table, lambda: "no outbox sources polled yet "
                 "(`choreoscope collect --outbox NAME=DB_URL[#table]` monitors one)")


def _graph(store: Any, args: argparse.Namespace) -> int:
    from ..query import graph, graph_dot
    from ..query.formatting import graph_table

    g = graph(store) if _ready(store) else {"nodes": [], "edges": []}
    if args.dot:
        sys.stdout.write(graph_dot(g))
        return 0
    return _emit(args, g, graph_table, lambda: _nothing(store, "no graph edges"))


_COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "flows": _flows, "flow": _flow, "anomalies": _anomalies, "outbox": _outbox, "graph": _graph,
}


def _emit(args: argparse.Namespace, value: Any, render: Callable[[Any], str],
          empty: Callable[[], str] | None = None) -> int:
    """JSON, the table, or when a table would be empty what `empty` says."""
    if args.json:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        try:
            text.encode(sys.stdout.encoding or "utf-8")
        except (UnicodeEncodeError, LookupError):  # a lone surrogate in some data, say
            text = json.dumps(value, indent=2)  # \uXXXX escapes: the same JSON, encodable
        print(text)
    elif empty is not None and not (value["edges"] if isinstance(value, dict) else value):
        print(empty())
    else:
        print(render(value))
    return 0


def _nothing(store: Any, what: str) -> str:
    """What an empty table says: a store the collector has not filled gets the hint."""
    from sqlalchemy import select

    from .. import retention
    from ..store.schema import events

    if _ready(store):
        with store.engine.connect() as conn:
            if conn.execute(select(events.c.offset).limit(1)).first() is not None:
                return f"{what} in the events stored so far"
            gone = retention.pruned(conn)["events"]
        if gone:
            return (f"{what}: retention (`collect --retention DAYS`) has pruned every event "
                    f"stored ({gone:,}), and none has come since")
    return f"{what} in the store yet: {_HINT}"


def _ready(store: Any) -> bool:
    """Whether the collector has created the store's tables (an empty database has none)."""
    from sqlalchemy import inspect

    return bool(inspect(store.engine).has_table("flows"))


# The largest LIMIT every store takes (a 64-bit signed integer in SQLite and PostgreSQL).
_MAX_LIMIT = 2**63 - 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return min(value, _MAX_LIMIT)  # more than any store holds: all of them
