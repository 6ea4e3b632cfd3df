"""SpanWriter: a bounded queue, batched storage, drops counted into the meta table."""

from __future__ import annotations

from pathlib import Path

from choreoscope.collector.store import Store
from choreoscope.collector.traces.model import Span
from choreoscope.collector.traces.writer import SpanWriter


def spans(n: int, start: int = 1) -> list[Span]:
    return [Span(trace_id=f"{i:032x}", span_id=f"{i:016x}", name=f"s{i}")
            for i in range(start, start + n)]


def test_queue_bound_batches_and_drop_count(tmp_path: Path) -> None:
    """Spans beyond max_queue are dropped; the rest are stored in batches; drops add up in meta."""
    store = Store(f"sqlite:///{tmp_path}/w.db").create()
    store.set_meta("otlp.spans_dropped", "10")  # from an earlier run or another collector
    writer = SpanWriter(store, origin="otlp", dropped_meta_key="otlp.spans_dropped",
                        max_queue=5, batch_size=2)
    assert writer.offer(spans(7)) == 2  # not started yet: nothing drains the queue
    writer.start()
    try:
        assert writer.flush()
        assert writer.offer(spans(3, start=100)) == 0
        assert writer.flush()
    finally:
        writer.stop()
    assert (writer.spans_stored, writer.spans_dropped) == (8, 2)
    assert store.get_meta("otlp.spans_dropped") == "12"


def test_stop_stores_what_is_queued(tmp_path: Path) -> None:
    """stop() drains the queue before the thread ends."""
    store = Store(f"sqlite:///{tmp_path}/w.db").create()
    writer = SpanWriter(store, origin="otlp", dropped_meta_key="k", flush_interval_s=5)
    writer.offer(spans(50))
    writer.start().stop()
    assert writer.spans_stored == 50
