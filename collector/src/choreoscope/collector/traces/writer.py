"""A bounded span queue drained by one writer thread that stores spans in batches.

Telemetry never takes the host down: when the queue is full, or the store cannot take a batch
(unreachable, disk full), the spans are dropped and counted (`spans_dropped`), and the count is
added to a meta key so the dashboard and the metrics can show it. A batch refused because of
one bad span is stored span by span by the sink: the others are not lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from sqlalchemy import select

from ..ingest.redact import Redactor
from ..store import Store
from ..store.schema import meta
from .model import Span
from .sink import SpanSink

log = logging.getLogger(__name__)


class SpanWriter:
    """`offer(spans)` queues what fits; a daemon thread stores batches of up to `batch_size`."""

    def __init__(self, store: Store, *, origin: str, dropped_meta_key: str,
                 max_queue: int = 100_000, batch_size: int = 2_000,
                 flush_interval_s: float = 0.2, redactor: Redactor | None = None) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError(f"expected max_queue and batch_size >= 1, got {max_queue!r} and "
                             f"{batch_size!r}")
        self.store = store
        self.origin = origin
        self.dropped_meta_key = dropped_meta_key
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.sink = SpanSink(store, redactor)
        self.spans_stored = 0
        self.spans_dropped = 0
        self._dropped_unsaved = 0
        self._queue: deque[Span] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> SpanWriter:
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"choreoscope-{self.origin}-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Store what is queued, then end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def offer(self, spans: list[Span]) -> int:
        """Queue spans; returns how many were dropped because the queue is full."""
        with self._cond:
            room = max(0, self.max_queue - len(self._queue))
            taken = spans[:room]
            dropped = len(spans) - len(taken)
            self._queue.extend(taken)
            if dropped:
                self.spans_dropped += dropped
                self._dropped_unsaved += dropped
            self._cond.notify_all()
        return dropped

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued span (and the drop count) is stored; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._busy or self._dropped_unsaved:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._dropped_unsaved and not self._closing:
                    self._cond.wait(self.flush_interval_s)
                if self._closing and not self._queue and not self._dropped_unsaved:
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch_size, len(self._queue)))]
                dropped, self._dropped_unsaved = self._dropped_unsaved, 0
                self._busy = True
            try:
                self._write(batch, dropped)
            except Exception:
                log.exception("storing %d received spans failed; they are dropped", len(batch))
                with self._cond:
                    self.spans_dropped += len(batch)
                    self._dropped_unsaved += len(batch) + dropped
                    self._busy = False
                    self._cond.notify_all()
                    if self._closing:
                        return
                time.sleep(self.flush_interval_s)
                continue
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, batch: list[Span], dropped: int) -> None:
        with self.store.engine.begin() as conn:
            if batch:
                self.spans_stored += self.sink.write(conn, batch, origin=self.origin)
            if dropped:
                current = conn.execute(select(meta.c.value)
                                       .where(meta.c.key == self.dropped_meta_key)).scalar()
                text = str(current or "")
                total = int(text) + dropped if text.isdigit() else dropped
                self.store.upsert(conn, meta, [{"key": self.dropped_meta_key,
                                                "value": str(total)}], ["key"])
