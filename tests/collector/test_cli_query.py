"""`choreoscope flows | flow | anomalies | outbox | graph` against a filled store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from choreoscope.collector.cli import main
from choreoscope.collector.store import Store
from tests.collector.query import expected
from tests.collector.query._data import T0, event, fill

CHOREOSCOPE = Path(sys.executable).parent / "choreoscope"


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A filled SQLite store."""
    u = f"sqlite:///{tmp_path / 'store.db'}"
    fill(Store(u)).dispose()
    return u


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_flows_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`flows --json` prints exactly the DESIGN shape; --status and --limit filter."""
    assert run(capsys, "--store", url, "flows", "--json") == (
        0, json.dumps(expected.FLOWS, indent=2) + "\n", "")
    code, out, _ = run(capsys, "--store", url, "flows", "--status", "failed", "--json")
    assert (code, json.loads(out)) == (0, [expected.FLOW_3])
    code, out, _ = run(capsys, "--store", url, "flows", "--limit", "1", "--json")
    assert (code, json.loads(out)) == (0, [expected.FLOW_3])
    # beyond the 64-bit integers SQLite and PostgreSQL take: every flow
    code, out, _ = run(capsys, "--store", url, "flows", "--limit", str(10**20), "--json")
    assert (code, json.loads(out)) == (0, expected.FLOWS)


def test_flow_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`flow ID --json` prints the summary, every record, the spans and the anomalies."""
    code, out, err = run(capsys, "--store", url, "flow", "ord-1", "--json")
    flow = json.loads(out)
    assert (code, err) == (0, "")
    assert {k: v for k, v in flow.items()
            if k not in ("events", "spans", "anomalies")} == expected.FLOW_1
    assert [(e["id"], e["topic"], e["offset"], e["duplicate"]) for e in flow["events"]] == \
        expected.FLOW_1_RECORDS
    assert flow["events"][0] == expected.FIRST_EVENT
    assert flow["spans"][1] == expected.CONSUMER_SPAN_1
    assert flow["anomalies"] == [expected.ANOMALY_DUPLICATE]


def test_flow_json_with_a_lone_surrogate_in_the_data(tmp_path: Path) -> None:
    """Data holding a lone surrogate (valid JSON text, no UTF-8) prints as \\u escapes."""
    from sqlalchemy import update

    from choreoscope.collector.store.schema import events

    u = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(Store(u))
    with store.engine.begin() as conn:
        conn.execute(update(events).values(data='{"s":"\\ud800 caf\\u00e9"}'))
    store.dispose()
    r = subprocess.run([str(CHOREOSCOPE), "--store", u, "flow", "ord-1", "--json"],
                       capture_output=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")
    assert b'"\\ud800 caf\\u00e9"' in r.stdout
    assert json.loads(r.stdout)["events"][0]["data"] == {"s": "\ud800 café"}


def test_flow_by_event_or_trace_id(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`flow` also accepts an event id or a trace id of the flow."""
    code, out, _ = run(capsys, "--store", url, "flow", "e6", "--json")
    assert (code, json.loads(out)["correlation_id"]) == (0, "ord-3")
    code, out, _ = run(capsys, "--store", url, "flow", "1" * 32, "--json")
    assert (code, json.loads(out)["correlation_id"]) == (0, "ord-1")


def test_flow_unknown(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown flow id exits 1 with a clear message, also for an injection string."""
    assert run(capsys, "--store", url, "flow", "nope") == (
        1, "", "choreoscope: no flow with correlation id, event id or trace id 'nope' "
        "(`choreoscope flows` lists them)\n")
    code, out, err = run(capsys, "--store", url, "flow", "' OR 1=1 --", "--json")
    assert (code, out) == (1, "")
    assert "no flow with correlation id, event id or trace id" in err


def test_flow_of_an_outbox_row_that_never_reached_the_bus(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An id only a dead outbox row holds (its event never reached the bus, so no flow has
    it) is answered with that row, where the operator can find it."""
    assert run(capsys, "--store", url, "flow", "o-1") == (1, "", (
        "choreoscope: no flow with correlation id, event id or trace id 'o-1' "
        "(`choreoscope flows` lists them)\n"
        "choreoscope: outbox orders holds its dead row o-1 (order.cancelled, 5 attempts): its "
        "event never reached the bus (`choreoscope outbox` shows it)\n"))


def test_flow_by_an_upper_case_trace_id(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace id is found in any letter case (some tools print them in upper case)."""
    from choreoscope.collector.store.schema import events

    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [event("orders", 50, "e50", "order.placed", "orders",
                                             "ord-1", at=T0, trace="ab" * 16)])
    store.dispose()
    code, out, _ = run(capsys, "--store", url, "flow", ("ab" * 16).upper(), "--json")
    assert (code, json.loads(out)["correlation_id"]) == (0, "ord-1")


def test_anomalies_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`anomalies --json` prints every anomaly; --kind filters."""
    code, out, _ = run(capsys, "--store", url, "anomalies", "--json")
    assert (code, json.loads(out)) == (0, expected.ANOMALIES)
    code, out, _ = run(capsys, "--store", url, "anomalies", "--kind", "stuck_outbox", "--json")
    assert (code, json.loads(out)) == (0, [expected.ANOMALY_OUTBOX])


def test_unknown_kind_and_status_rejected(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A kind or status that does not exist is a usage error naming the choices."""
    with pytest.raises(SystemExit) as exc:
        main(["--store", url, "anomalies", "--kind", "'; DROP TABLE anomalies; --"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--store", url, "flows", "--status", "done"])
    for limit in ("-3", "0"):  # 0 flows is no listing: not "no flows stored"
        with pytest.raises(SystemExit):
            main(["--store", url, "flows", "--limit", limit])
        assert f"expected a positive integer, got '{limit}'" in capsys.readouterr().err


def test_outbox_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`outbox --json` prints every source, unreachable ones with reachable false."""
    code, out, _ = run(capsys, "--store", url, "outbox", "--json")
    assert (code, json.loads(out)) == (0, expected.OUTBOX_LATER)


def test_an_outbox_source_no_collector_polls_is_stale(
        url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A source whose last poll is older than three poll intervals shows STATE STALE and a
    line saying so: its figures are old, whatever they say. Polled just now, it is ok."""
    monkeypatch.setenv("CHOREOSCOPE_POLL_INTERVAL", "20")
    code, states, said = _outbox_polled(capsys, url, orders_ago_ms=5_000,
                                        billing_ago_ms=61_000)
    assert (code, states) == (0, {"orders": "ok", "billing": "STALE"})
    assert said.startswith("billing: stale: last polled 1m0") and said.endswith(
        "though collectors poll every 20 s: none polls it now (stopped, or no longer given "
        "this --outbox)")


def test_an_outbox_source_is_judged_by_the_interval_its_collector_recorded(
        url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector polling every 60 s: a source polled 48 s ago is ok, though the reader's own
    settings say 10 s; one polled 200 s ago is STALE, said with the collector's interval."""
    from choreoscope.collector.query import intervals

    monkeypatch.delenv("CHOREOSCOPE_POLL_INTERVAL", raising=False)
    store = Store(url)
    intervals.record(store, poll_s=60.0, analyze_s=5.0)
    store.dispose()
    code, states, said = _outbox_polled(capsys, url, orders_ago_ms=48_000,
                                        billing_ago_ms=200_000)
    assert (code, states) == (0, {"orders": "ok", "billing": "STALE"})
    assert "though collectors poll every 60 s" in said


def _outbox_polled(capsys: pytest.CaptureFixture[str], url: str, *, orders_ago_ms: int,
                   billing_ago_ms: int) -> tuple[int, dict[str, str], str]:
    """`outbox` (exit code, STATE per source, the billing source's stale line) with the two
    sources last polled that long ago, billing reachable."""
    from sqlalchemy import update

    from choreoscope.collector.store.schema import outbox_sources

    store = Store(url)
    now_ms = int(time.time() * 1000)
    with store.engine.begin() as conn:
        conn.execute(update(outbox_sources).where(outbox_sources.c.source == "orders")
                     .values(last_poll_ms=now_ms - orders_ago_ms))
        conn.execute(update(outbox_sources).where(outbox_sources.c.source == "billing")
                     .values(last_poll_ms=now_ms - billing_ago_ms, reachable=True))
    store.dispose()
    code, out, _ = run(capsys, "--store", url, "outbox")
    states = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:3]}
    said = next((line for line in out.splitlines() if line.startswith("billing: stale")), "")
    return code, states, said


def test_graph_json_and_dot(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`graph --json` prints nodes and edges, `graph --dot` prints Graphviz DOT."""
    code, out, _ = run(capsys, "--store", url, "graph", "--json")
    assert (code, json.loads(out)) == (0, expected.GRAPH)
    assert run(capsys, "--store", url, "graph", "--dot") == (0, expected.DOT, "")
    with pytest.raises(SystemExit):
        main(["--store", url, "graph", "--json", "--dot"])


def test_tables(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json every command prints aligned tables."""
    code, out, _ = run(capsys, "--store", url, "flows")
    assert code == 0
    assert out.splitlines()[0].split() == ["CORRELATION", "ID", "STATUS", "STARTED", "DURATION",
                                           "EVENTS", "ANOMALIES", "VARIANT"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["ord-3", "ord-2", "ord-1"]
    code, out, _ = run(capsys, "--store", url, "flow", "ord-1")
    lines = out.splitlines()
    assert (code, lines[0], lines[1]) == (0, "flow        ord-1", "status      completed")
    assert "events      3 (4 records)" in lines
    assert lines[-1].split()[:2] == ["2025-11-24T16:00:01.000Z", "duplicate"]
    assert any(line.endswith("payments/0/1  duplicate") for line in lines)
    code, out, _ = run(capsys, "--store", url, "anomalies", "--kind", "stuck_flow")
    assert out.splitlines()[1].split()[:3] == ["2025-11-24T16:02:10.000Z", "stuck_flow", "-"]
    code, out, _ = run(capsys, "--store", url, "outbox")
    assert "billing: unreachable: connection refused" in out.splitlines()
    code, out, _ = run(capsys, "--store", url, "graph")
    assert len(out.splitlines()) == 1 + len(expected.GRAPH["edges"])


def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store file that does not exist gives a hint and exit 1, and is not created."""
    path = tmp_path / "none.db"
    code, out, err = run(capsys, "--store", f"sqlite:///{path}", "flows", "--json")
    assert (code, out) == (1, "")
    assert err.startswith(f"choreoscope: no store at {path}: run `choreoscope collect")
    assert "Traceback" not in err
    assert not path.exists()


@pytest.mark.parametrize("create", [True, False], ids=["schema", "no-tables"])
def test_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], create: bool) -> None:
    """An empty store prints a hint in tables and empty JSON with --json."""
    u = f"sqlite:///{tmp_path / 'empty.db'}"
    s = Store(u)
    if create:
        s.create()
    else:
        with s.engine.begin() as conn:
            conn.exec_driver_sql("create table other (x int)")
    s.dispose()
    assert run(capsys, "--store", u, "flows", "--json") == (0, "[]\n", "")
    assert run(capsys, "--store", u, "anomalies", "--json") == (0, "[]\n", "")
    assert run(capsys, "--store", u, "outbox", "--json") == (0, "[]\n", "")
    assert run(capsys, "--store", u, "graph", "--json")[1] == '{\n  "nodes": [],\n  "edges": []\n}\n'
    code, out, _ = run(capsys, "--store", u, "flows")
    assert (code, out) == (0, "no flows in the store yet: run `choreoscope collect --bootstrap "
                              "HOST:PORT` to fill it, or point --store / CHOREOSCOPE_STORE at "
                              "the collector's store\n")
    assert run(capsys, "--store", u, "outbox") == (
        0, "no outbox sources polled yet (`choreoscope collect --outbox NAME=DB_URL[#table]` "
           "monitors one)\n", "")
    assert run(capsys, "--store", u, "flow", "x")[0] == 1


def test_a_store_retention_emptied_says_so(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A store whose every event retention pruned does not ask to run the collector: it
    says where the events went."""
    u = f"sqlite:///{tmp_path / 'pruned.db'}"
    s = Store(u).create()
    s.set_meta("retention.pruned.events", "300")
    s.dispose()
    assert run(capsys, "--store", u, "flows") == (
        0, "no flows: retention (`collect --retention DAYS`) has pruned every event stored "
           "(300), and none has come since\n", "")


def test_nothing_found_in_a_filled_store(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty answer from a store the collector filled does not ask to run the collector."""
    assert run(capsys, "--store", url, "anomalies", "--kind", "orphan") == (
        0, "no anomalies of kind orphan in the events stored so far\n", "")
    assert run(capsys, "--store", url, "flows", "--status", "in_progress") == (
        0, "no flows with status in_progress in the events stored so far\n", "")


@pytest.mark.parametrize(("store_url", "message"), [
    ("mysql://u:pw@h/db", "choreoscope: expected a sqlite:///PATH or postgresql://... store URL, "
                          "got 'mysql://u:***@h/db'\n"),
    ("notaurl", "choreoscope: expected a sqlite:///PATH or postgresql://... store URL, "
                "got 'notaurl'\n"),
    ("postgresql://admin:hunter2@127.0.0.1:notaport/x",
     "choreoscope: expected a valid store URL, got 'postgresql://admin:***@127.0.0.1:notaport/x'"
     ": invalid literal for int() with base 10: 'notaport'\n"),
])
def test_unsupported_store_url(store_url: str, message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """A store URL of another database is refused with the expected form, not a traceback."""
    assert run(capsys, "--store", store_url, "flows") == (1, "", message)


def test_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store file that is not SQLite exits 1 saying so."""
    path = tmp_path / "notes.db"
    path.write_text("not a database at all")
    code, out, err = run(capsys, "--store", f"sqlite:///{path}", "flows")
    assert (code, out) == (1, "")
    assert err.endswith("file is not a database\n")


def test_unreachable_store_hides_password(capsys: pytest.CaptureFixture[str]) -> None:
    """A PostgreSQL store that cannot be reached exits 1 without a traceback or the password."""
    code, out, err = run(capsys, "--store", "postgresql://alice:s3cr%40t@127.0.0.1:1/x",
                         "flows", "--json")
    assert (code, out) == (1, "")
    assert err.startswith("choreoscope: cannot read the store "
                          "postgresql://alice:***@127.0.0.1:1/x: ")
    assert "s3cr" not in err and "Traceback" not in err


def test_store_from_environment(url: str, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """CHOREOSCOPE_STORE names the store when --store is not given."""
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    code, out, _ = run(capsys, "anomalies", "--kind", "duplicate", "--json")
    assert (code, json.loads(out)) == (0, [expected.ANOMALY_DUPLICATE])


def test_store_after_the_command(url: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--store` works after the command name too, and there it wins over one given before."""
    code, out, _ = run(capsys, "anomalies", "--kind", "duplicate", "--store", url, "--json")
    assert (code, json.loads(out)) == (0, [expected.ANOMALY_DUPLICATE])
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    code, out, _ = run(capsys, "--store", missing, "graph", "--store", url, "--json")
    assert (code, json.loads(out)) == (0, expected.GRAPH)


@pytest.mark.postgres
def test_flows_json_on_postgres(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands read a PostgreSQL store the same way."""
    fill(Store(postgres_url)).dispose()
    code, out, _ = run(capsys, "--store", postgres_url, "flows", "--json")
    assert (code, json.loads(out)) == (0, expected.FLOWS)
    code, out, _ = run(capsys, "--store", postgres_url, "flows", "--limit", str(10**20),
                       "--json")
    assert (code, json.loads(out)) == (0, expected.FLOWS)
    code, out, _ = run(capsys, "--store", postgres_url, "graph", "--dot")
    assert (code, out) == (0, expected.DOT)


def test_real_subprocess(url: str) -> None:
    """The installed `choreoscope` script prints the same JSON."""
    done = subprocess.run([str(CHOREOSCOPE), "--store", url, "flows", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, json.loads(done.stdout), done.stderr) == (0, expected.FLOWS, "")
    done = subprocess.run([str(CHOREOSCOPE), "--store", url, "flow", "missing"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the query as another user")
def test_a_reader_who_may_not_write_beside_a_closed_sqlite_store_is_told_why() -> None:
    """After the collector closed the store (no -wal/-shm left), a user who may read the file
    but not write in its folder cannot read it: SQLite must create those files. One line
    says so and what to do, instead of only SQLite's 'attempt to write a readonly database'."""
    with tempfile.TemporaryDirectory(prefix="choreoscope-ro-") as tmp:  # not under pytest's
        _read_as_nobody(Path(tmp) / "closed")  # tmp_path, which only root may enter


def _read_as_nobody(folder: Path) -> None:
    folder.mkdir()
    fill(Store(f"sqlite:///{folder}/store.db").create()).dispose()
    assert sorted(p.name for p in folder.iterdir()) == ["store.db"]
    for path in (folder.parent, folder):
        path.chmod(0o755)
    (folder / "store.db").chmod(0o644)
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(CHOREOSCOPE), "--store", f"sqlite:///{folder}/store.db", "flows"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"choreoscope: cannot read the store sqlite:///{folder}/store.db: attempt to write a "
        f"readonly database (a SQLite store is read through store.db-wal and -shm beside it, "
        f"which this user cannot create in {folder}: read it while the collector runs, or as "
        f"a user who may write there)\n")
    folder.chmod(0o777)  # now the reader may create them: it reads the store
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(CHOREOSCOPE), "--store", f"sqlite:///{folder}/store.db", "flows",
                           "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, json.loads(done.stdout)) == (0, expected.FLOWS)


def test_store_is_an_option_of_every_command_but_the_broker(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--store` after the command works for every command that reads or writes the store;
    the broker, which keeps its topics in memory, does not offer it."""
    from choreoscope.collector.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    offering = {name for name, p in commands.items()
                if any("--store" in a.option_strings for a in p._actions)}
    assert offering == set(commands) - {"broker"}
    with pytest.raises(SystemExit) as exc:
        main(["broker", "--store", "sqlite:///x.db"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --store" in capsys.readouterr().err


def test_a_trace_of_several_flows_says_so(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`flow TRACE_ID` for a trace in which one request started two flows shows the first
    seen and names the other on stderr, instead of picking one silently."""
    from choreoscope.collector.store.schema import events
    from tests.collector.query._data import T0, event

    shared = "5" * 32
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [
            event("orders", 10, "n1", "order.placed", "orders", "ord-n", at=T0, trace=shared),
            event("orders", 11, "f1", "order.placed", "orders", "ord-f", at=T0 + 1,
                  trace=shared)])
    store.dispose()
    code, out, err = run(capsys, "--store", url, "flow", shared, "--json")
    assert (code, json.loads(out)["correlation_id"]) == (0, "ord-n")
    assert err == (f"choreoscope: trace {shared} holds 2 flows; showing 'ord-n', the first "
                   "published; the others: ord-f\n")
    assert run(capsys, "--store", url, "flow", "ord-f", "--json")[2] == ""
    assert json.loads(run(capsys, "--store", url, "flow", " ord-f \n", "--json")[1])[
        "correlation_id"] == "ord-f"  # pasted with spaces around it
