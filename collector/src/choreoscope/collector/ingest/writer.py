"""Where ingest batches are written: by the calling thread, or by a child process.

The database work of a batch (binding every value, SQLite's B-tree inserts into the table
and its indexes) costs about as much as decoding it. In a thread of the ingest process it
competes with decoding for the interpreter lock, and SQLite, which lets the lock go for
each row, gets it back only after a switch interval: the two ran one after the other. A
child process owning its own connection writes while the parent decodes the next batch.

The ingest sends a batch before reading the answer for the previous one, so the child
always has the next batch at hand; answers come back in the order sent. Either writer
reports `StoreUnavailable` when a batch did not reach the store, so the caller stores it
again and commits nothing meanwhile. A child that dies (killed, out of memory) is started
again for the next attempt.

The child also decodes: a batch may hand over the last of its records undecoded
(`Batch.raw`), and the child turns them into rows with the same code before storing the
lot. How many is for the ingest to choose (share.py): the part that keeps both processes
equally busy.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import marshal
import multiprocessing
import pickle
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .._lifetime import die_with_parent
from .batch import RawRecord, StoreUnavailable, rows_of, store_tuples
from .redact import Redactor

log = logging.getLogger(__name__)


class BatchWriter(Protocol):
    """Stores batches of rows, each in one transaction, answering in the order sent."""

    def start(self) -> BatchWriter: ...

    def send(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
             raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> None:
        """Hand a batch of rows (tuples of `columns`) over, followed by `raw` records to
        decode into rows observed at `observed_at_ms`; raises StoreUnavailable when it
        cannot be."""

    def ready(self, timeout_s: float) -> bool:
        """Whether the answer for the oldest batch sent is in, waiting up to `timeout_s`."""
        ...

    def receive(self) -> int:
        """The rows inserted by the oldest batch sent; raises StoreUnavailable when it did
        not reach the store."""
        ...

    def write(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
              raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> int:
        """Send and receive one batch."""
        ...

    @property
    def last_cpu_s(self) -> float | None:
        """CPU seconds the writer spent on the batch last received, None when it shares the
        ingest's process (decoding there gains nothing)."""
        ...

    def close(self) -> None: ...


class ThreadWriter:
    """Writes in the calling thread, through the ingest's own `Store`."""

    last_cpu_s = None

    def __init__(self, store: Any, redactor: Redactor | None = None) -> None:
        self.store = store
        self.redactor = redactor or Redactor()
        self._answers: collections.deque[int | StoreUnavailable] = collections.deque()

    def start(self) -> ThreadWriter:
        return self

    def send(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
             raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> None:
        try:
            self._answers.append(self.write(columns, rows, raw, observed_at_ms))
        except StoreUnavailable as exc:
            self._answers.append(exc)

    def ready(self, timeout_s: float) -> bool:
        return True

    def receive(self) -> int:
        answer = self._answers.popleft()
        if isinstance(answer, StoreUnavailable):
            raise answer
        return answer

    def write(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
              raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> int:
        return store_tuples(self.store, columns,
                            rows_of(rows, raw or (), self.redactor, observed_at_ms))

    def close(self) -> None:
        self._answers.clear()


class ProcessWriter:
    """Writes in a child process with its own connection to the store at `url`. Batches
    sent before the answer to the previous one is read wait in the child, which reads
        its input in a thread of its own: it never idles while the parent serializes. It decodes
    the raw records of a batch with a `Redactor` of `redactor`'s pattern and size cap."""

    def __init__(self, url: str, redactor: Redactor | None = None) -> None:
        self.url = url
        redactor = redactor or Redactor()
        self._redaction = (redactor.pattern, redactor.max_bytes)
        self._last_cpu_s: float | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._broken = False  # a send failed: the child is gone once its answers are read
        self.restarts = 0

    def start(self) -> ProcessWriter:
        if self._broken:
            self._reap()
        if self._process is None:
            ctx = multiprocessing.get_context("spawn")  # never fork librdkafka's threads
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(child, self.url, self._redaction),
                                  daemon=True,
                                  name="choreoscope-ingest-writer")
            process.start()
            child.close()
            self._process, self._conn = process, parent
        return self

    def send(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
             raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> None:
        conn = self.start()._conn
        assert conn is not None
        try:
            conn.send_bytes(_packed((columns, rows, raw or None, observed_at_ms)))
        except OSError as exc:
            # Answers it sent before dying may still wait in the pipe: receive() reads them,
            # the next send starts a new child.
            self._broken = True
            process = self._process
            if process is not None:
                process.join(1)
            code = process.exitcode if process is not None else None
            raise _stopped_error(exc, code) from None
        except Exception as exc:  # noqa: BLE001 - a row that cannot be serialized: retried
            raise StoreUnavailable(f"could not hand the batch over: {type(exc).__name__}: "
                                   f"{exc}") from None

    def ready(self, timeout_s: float) -> bool:
        conn = self._conn
        try:
            return conn is None or conn.poll(timeout_s)
        except OSError:
            return True  # receive() reports it

    def receive(self) -> int:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the store writer process stopped; it is started again")
        try:
            status, value, cpu_s = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._stopped(exc) from None
        self._last_cpu_s = cpu_s
        if status == "ok":
            return int(value)
        # "unavailable", or "error": a failure the child did not expect. The batch is kept
        # uncommitted and retried either way (ingest stalls loudly rather than skip it).
        raise StoreUnavailable(value)

    def write(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]],
              raw: list[RawRecord] | None = None, observed_at_ms: int = 0) -> int:
        self.send(columns, rows, raw, observed_at_ms)
        return self.receive()

    @property
    def last_cpu_s(self) -> float | None:
        return self._last_cpu_s

    def close(self) -> None:
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send_bytes(_STOP)
        process.join(10)
        self._reap()

    def _stopped(self, exc: BaseException) -> StoreUnavailable:
        return _stopped_error(exc, self._reap())

    def _reap(self) -> int | None:
        """Stop and forget the child (a later send starts a new one); its exit code."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._broken = False
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join(5)
        self.restarts += 1
        return process.exitcode


# A batch crosses the pipe as bytes: marshal (rows are tuples of str, int, float, bool and
# None, raw records of those, bytes and lists: a quarter of pickle's cost to write, the
# parent's side, where the ingest spends most), else pickle (a subclass of one of those).
_MARSHAL, _PICKLE, _STOP = b"m", b"p", b""


def _packed(message: tuple[Any, ...]) -> bytes:
    try:
        return _MARSHAL + marshal.dumps(message)
    except ValueError:  # an object marshal does not write
        return _PICKLE + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _unpacked(data: bytes) -> Any:
    """A message `_packed` made; None for `_STOP`."""
    if not data:
        return None
    body = memoryview(data)[1:]
    return marshal.loads(body) if data[:1] == _MARSHAL else pickle.loads(body)


def _stopped_error(exc: BaseException, code: int | None) -> StoreUnavailable:
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(f"the store writer process stopped ({reason}, exit code {code}); "
                            "it is started again")


def _serve(conn: Connection, url: str,
           redaction: tuple[str, int]) -> None:  # pragma: no cover - runs in the child
    """The child: decode and store each (columns, rows, raw, observed_at_ms) batch received;
    answer (status, value, CPU seconds this process spent since the previous answer)."""
    # Ctrl-C, or a SIGTERM to the collector's process group, is for the parent: it stores the
    # batches in hand through us and then closes the pipe, which ends this loop. A parent
    # that dies takes us with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..store import Store

    inbox: queue.Queue[Any] = queue.Queue(maxsize=1)

    def read() -> None:  # the next batch is read (and unpacked) while this one is stored
        while True:
            try:
                message = _unpacked(conn.recv_bytes())
            except (EOFError, OSError):
                message = None  # the parent is gone
            inbox.put(message)
            if message is None:
                return

    threading.Thread(target=read, daemon=True, name="choreoscope-writer-input").start()
    store = Store(url)
    redactor = Redactor(*redaction)
    cpu = time.process_time()
    try:
        while True:
            message = inbox.get()
            if message is None:
                return
            columns, rows, raw, observed_at_ms = message
            gc.disable()  # tens of thousands of acyclic objects per batch: see build_batch
            try:
                if raw:
                    rows = rows_of(rows, raw, redactor, observed_at_ms)
                answer: tuple[str, Any] = ("ok", store_tuples(store, columns, rows))
            except StoreUnavailable as exc:
                answer = ("unavailable", str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, who logs it
                answer = ("error", f"{type(exc).__name__}: {exc}")
            finally:
                del rows, raw, message
                gc.enable()
            now = time.process_time()
            spent, cpu = now - cpu, now
            try:
                conn.send((*answer, spent))
            except OSError:
                return
    finally:
        store.dispose()


def writer_for(store: Any, kind: str = "auto", redactor: Redactor | None = None) -> BatchWriter:
    """The writer of `kind` (`process`, `thread`, or `auto`: a process unless the store
    lives in this process's memory), decoding raw records with `redactor`."""
    if kind not in ("auto", "process", "thread"):
        raise ValueError(f"expected writer 'auto', 'process' or 'thread', got {kind!r}")
    url = str(getattr(store, "url", ""))
    in_memory = url.startswith("sqlite") and (url.endswith(":memory:") or url.rstrip("/") in (
        "sqlite:", "sqlite+pysqlite:"))
    if kind == "thread" or (kind == "auto" and (in_memory or not url)):
        return ThreadWriter(store, redactor)
    return ProcessWriter(url, redactor)
