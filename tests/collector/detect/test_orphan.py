"""An event whose cause never appeared within the horizon after its observation is an orphan."""

from __future__ import annotations

from choreoscope.collector.detect import orphan
from choreoscope.collector.reconstruct.load import raw_connection
from tests.collector.reconstruct.factory import T0, ev, new_store, put


def _orphans(store, now_ms, horizon_s=300.0):
    with raw_connection(store) as raw:
        return orphan.detect(orphan.load(raw, store.dialect, now_ms=now_ms, horizon_s=horizon_s),
                             now_ms=now_ms, horizon_s=horizon_s)


def test_missing_cause_after_horizon_is_an_orphan(tmp_path):
    """e2 names cause x9, never seen: an orphan once 300 s passed since e2 was observed."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f1", offset=0),
                ev("e2", "payment.authorized", flow="f1", offset=1, cause="x9", subject="ord_1",
                   source="payments", observed=T0 + 10),
                ev("e3", "payment.authorized", flow="f1", offset=2, cause="e1", observed=T0)])
    [a] = _orphans(store, T0 + 10 + 300_000)
    assert (a.kind, a.key, a.event_id, a.subject, a.service, a.correlation_id) == (
        "orphan", "e2", "e2", "ord_1", "payments", "f1")
    assert a.extra["causation_id"] == "x9"
    assert a.detail == "cause x9 of payment.authorized e2 was never seen within 300s"


def test_not_an_orphan_before_the_horizon(tmp_path):
    """One millisecond before the horizon the missing cause is not reported."""
    store = new_store(tmp_path)
    put(store, [ev("e2", "payment.authorized", flow="f1", cause="x9", observed=T0)])
    assert _orphans(store, T0 + 299_999) == []
    assert [a.key for a in _orphans(store, T0 + 300_000)] == ["e2"]


def test_detect_alone_waits_the_horizon_as_analysis_loads_every_effect(tmp_path):
    """The analysis pass loads every effect whose cause is unknown (no `now_ms`): detect
    itself holds back the ones observed less than the horizon ago."""
    store = new_store(tmp_path)
    put(store, [ev("e2", "payment.authorized", flow="f1", offset=0, cause="x9", observed=T0),
                ev("e4", "payment.authorized", flow="f2", offset=1, cause="x8",
                   observed=T0 + 1000)])
    with raw_connection(store) as raw:
        effects = list(orphan.load(raw, store.dialect))
    assert sorted(e.event_id for e in effects) == ["e2", "e4"]
    assert [a.key for a in orphan.detect(effects, now_ms=T0 + 300_500, horizon_s=300)] == ["e2"]
    assert orphan.detect(effects, now_ms=T0 + 299_999, horizon_s=300) == []


def test_cause_in_another_flow_is_not_an_orphan(tmp_path):
    """A cause stored under another correlation id is still seen."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f1", offset=0),
                ev("e2", "payment.authorized", flow="f2", offset=1, cause="e1")])
    assert _orphans(store, T0 + 10**9) == []


def test_clean_traffic_has_no_orphan(clean_run):
    """1,000 clean flows give no orphan."""
    store, _ = clean_run
    assert _orphans(store, T0 + 10**9) == []
