"""`choreoscope demo`, run headless for about a minute, shows every kind of trouble it injects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from choreoscope.collector.cli import main as cli

DEMO_SECONDS = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    found = {int(p) for p in out.stdout.split()}
    for child in list(found):
        found |= _children(child)
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Run the demo once for the module; record the pids it started and the store it filled."""
    workdir = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "demo", "--no-dashboard",
         "--duration", str(DEMO_SECONDS), "--rate", "5", "--stuck-after", "15",
         "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(pids) < 8:
        pids |= _children(proc.pid)
        time.sleep(0.5)
    try:
        output, _ = proc.communicate(timeout=DEMO_SECONDS + 120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    return {"rc": proc.returncode, "output": output, "pids": pids, "workdir": workdir,
            "store": f"sqlite:///{workdir / 'store.db'}"}


def _json(store: str, *argv: str, capsys: pytest.CaptureFixture[str]) -> object:
    capsys.readouterr()
    assert cli(["--store", store, *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.broker
def test_demo_exits_cleanly_and_leaves_nothing_running(demo_run: dict[str, object]) -> None:
    """The demo stops after --duration with exit code 0 and every process it started is gone."""
    assert demo_run["rc"] == 0, demo_run["output"]
    pids = demo_run["pids"]
    assert isinstance(pids, set) and len(pids) >= 8  # broker, collector, six shop processes
    assert [p for p in pids if _alive(p)] == []
    output = str(demo_run["output"])
    assert "broker" in output and "collector" in output


@pytest.mark.broker
def test_demo_fills_the_store_with_every_kind_of_trouble(
    demo_run: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """Completed flows, out-of-order, duplicate, stuck outbox row, failed handler, stuck flow, envelope."""
    store = str(demo_run["store"])
    flows = _json(store, "flows", "--limit", "100000", capsys=capsys)
    assert isinstance(flows, list)
    statuses = {f["status"] for f in flows}
    assert "completed" in statuses, demo_run["output"]
    assert {"failed", "stuck"} <= statuses
    anomalies = _json(store, "anomalies", capsys=capsys)
    assert isinstance(anomalies, list)
    kinds = {a["kind"] for a in anomalies}
    assert {"out_of_order", "duplicate", "stuck_outbox", "failed_handler", "stuck_flow",
            "envelope"} <= kinds, sorted(kinds)
    # the designed out-of-order case: notification-service's orders records lag behind, so it
    # handles a payment.failed before the order.placed that caused it
    assert any(a["kind"] == "out_of_order" and a["subkind"] == "causal"
               and a["group"] == "notification-service" and "payment.failed" in a["detail"]
               for a in anomalies), sorted({(a["kind"], a["group"]) for a in anomalies})
    envelope = [a for a in anomalies if a["kind"] == "envelope"]
    assert any(a["service"] == "pricing-legacy" for a in envelope)
    outbox = _json(store, "outbox", capsys=capsys)
    assert isinstance(outbox, list) and outbox[0]["source"] == "order-service"
    assert outbox[0]["stuck"], outbox


# What each shop service handles (the README's table): nothing else is processed by it.
HANDLES = {
    "payment-service": {"order.placed"},
    "inventory-service": {"payment.authorized"},
    "shipping-service": {"inventory.reserved"},
    "order-service": {"payment.failed", "inventory.out_of_stock"},
    "notification-service": {"order.placed", "payment.failed", "order.cancelled",
                             "shipment.scheduled"},
}


@pytest.mark.broker
def test_demo_graph_shows_only_what_services_handle(
    demo_run: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """Services pass over records of types they do not handle before their traced handler:
    the graph's consumers and the order checks see only real processing."""
    graph = _json(str(demo_run["store"]), "graph", capsys=capsys)
    assert isinstance(graph, dict)
    consumed = {(e["source"], e["target"]) for e in graph["edges"] if e["kind"] == "consumed_by"}
    assert consumed, graph
    assert {(t, s) for t, s in consumed if t not in HANDLES.get(s, {t})} == set()


@pytest.mark.broker
def test_demo_leaves_every_event_in_a_flow(demo_run: dict[str, object]) -> None:
    """The demo's final pass stores the services' last events and analyses them: the store
    left behind has no event outside a flow."""
    from sqlalchemy import text

    from choreoscope.collector.store import Store

    store = Store(str(demo_run["store"]), readonly=True)
    with store.engine.connect() as conn:
        outside = conn.execute(text(
            "SELECT count(*) FROM events WHERE flow_id NOT IN (SELECT correlation_id FROM flows)"
        )).scalar_one()
        stored = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
    store.dispose()
    assert (stored > 0, outside) == (True, 0)
    assert "final pass" in str(demo_run["output"])


@pytest.mark.broker
def test_demo_logs_are_kept(demo_run: dict[str, object]) -> None:
    """Each process of the demo writes its own log file in the work directory."""
    logs = Path(str(demo_run["workdir"])) / "logs"
    names = {p.stem for p in logs.glob("*.log")}
    assert {"collector", "order-service", "payment-service", "notification-service"} <= names
    # the order service's outbox table exists before the collector first polls it
    assert "outbox order-service cannot be read" not in (logs / "collector.log").read_text()


@pytest.mark.parametrize(("argv", "store"), [
    (["demo"], None),
    (["demo", "--store", "sqlite:///after.db"], "sqlite:///after.db"),
    (["--store", "sqlite:///before.db", "demo"], "sqlite:///before.db"),
])
def test_demo_store_option_either_side(argv: list[str], store: str | None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo keeps a fresh SQLite file unless `--store` is given, before or after `demo`."""
    from choreoscope.collector.cli import build_parser
    from choreoscope.collector.commands.demo import _store

    monkeypatch.setenv("CHOREOSCOPE_STORE", "sqlite:///from-env.db")
    assert _store(build_parser().parse_args(argv)) == store
