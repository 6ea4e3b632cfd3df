"""The batch writers: in the calling thread, or in a child process owning its connection."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from choreoscope.collector.ingest import StoreUnavailable
from choreoscope.collector.ingest.batch import record_row
from choreoscope.collector.ingest.redact import Redactor
from choreoscope.collector.ingest.rows import COLUMNS
from choreoscope.collector.ingest.writer import ProcessWriter, ThreadWriter, writer_for
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events


def _row(offset: int, **extra: object) -> tuple[object, ...]:
    row: dict[str, object] = {
        **dict.fromkeys(COLUMNS), "topic": "orders", "partition": 0, "offset": offset,
        "event_id": f"e{offset}", "type": "order.placed", "flow_id": f"c{offset // 2}",
        "observed_at_ms": 1000 + offset, "envelope": "binary", "data_truncated": False,
    }
    row.update(extra)
    return tuple(row[name] for name in COLUMNS)


def _write(writer: ProcessWriter, rows: list[tuple[object, ...]]) -> int:
    return writer.write(COLUMNS, rows)


def _count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_the_child_process_stores_batches_idempotently(tmp_path) -> None:
    """Rows written by the child are in the store; a batch written again inserts nothing."""
    store = Store(f"sqlite:///{tmp_path}/w.db").create()
    writer = ProcessWriter(store.url).start()
    try:
        rows = [_row(i) for i in range(5)]
        assert (_write(writer, rows), _write(writer, rows), _write(writer, [])) == (5, 0, 0)
        with store.engine.connect() as conn:
            stored = conn.execute(select(events.c.offset, events.c.event_id, events.c.flow_id)
                                  .order_by(events.c.offset)).all()
        assert [tuple(r) for r in stored] == [(i, f"e{i}", f"c{i // 2}") for i in range(5)]
    finally:
        writer.close()
        store.dispose()


@pytest.fixture
def running(tmp_path) -> Iterator[tuple[Store, ProcessWriter, Any]]:
    """A store, a process writer that stored one row, and its child process."""
    store = Store(f"sqlite:///{tmp_path}/r.db").create()
    writer = ProcessWriter(store.url).start()
    try:
        assert _write(writer, [_row(0)]) == 1
        child = writer._process
        assert child is not None and child.pid is not None
        yield store, writer, child
    finally:
        writer.close()
        store.dispose()


def test_a_killed_child_is_reported_unavailable_then_started_again(running) -> None:
    """SIGKILL of the child: the write in flight raises StoreUnavailable (nothing committed
    by the caller), the next write starts a new child and stores the batch."""
    store, writer, first = running
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    with pytest.raises(StoreUnavailable, match="exit code -9"):
        _write(writer, [_row(1)])
    assert first.is_alive() is False
    assert (_write(writer, [_row(1), _row(2)]), writer.restarts, _count(store)) == (2, 1, 3)


def test_the_child_leaves_sigint_and_sigterm_to_its_parent(running) -> None:
    """Ctrl-C or a SIGTERM to the collector's process group reaches the child too; it keeps
    storing the batches in hand, and stops when the parent closes it."""
    store, writer, child = running
    os.kill(child.pid, signal.SIGTERM)
    os.kill(child.pid, signal.SIGINT)
    assert (_write(writer, [_row(1)]), writer.restarts, child.is_alive()) == (1, 0, True)
    writer.close()
    assert (child.exitcode, _count(store)) == (0, 2)


def test_an_unreachable_store_is_unavailable_from_the_child_too() -> None:
    """A database that cannot be reached raises StoreUnavailable in the parent; the child
    stays up for the retry."""
    writer = ProcessWriter("postgresql+psycopg://nobody@127.0.0.1:1/none").start()
    try:
        with pytest.raises(StoreUnavailable, match="OperationalError"):
            _write(writer, [_row(0)])
        assert writer._process is not None and writer._process.is_alive()
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_store_whose_tables_are_gone_is_unavailable_not_rejecting(
        postgres_url: str, kind: str) -> None:
    """PostgreSQL's events table dropped under a running collector (the database dropped
    and made again empty): the batch raises StoreUnavailable, so no offset is committed. It
    was taken row by row as rows the database rejects, and their offsets committed with
    nothing stored. Once the schema is back, the same batch stores whole."""
    store = Store(postgres_url).create()
    writer = writer_for(store, kind).start()
    try:
        assert writer.write(COLUMNS, [_row(0)]) == 1
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE events")
        with pytest.raises(StoreUnavailable, match="UndefinedTable"):
            writer.write(COLUMNS, [_row(1), _row(2)])
        store.create()
        assert (writer.write(COLUMNS, [_row(1), _row(2)]), _count(store)) == (2, 2)
    finally:
        writer.close()
        store.dispose()


def test_close_leaves_no_process(tmp_path) -> None:
    """After close the child has exited; a writer never started closes quietly."""
    store = Store(f"sqlite:///{tmp_path}/c.db").create()
    writer = ProcessWriter(store.url).start()
    process = writer._process
    assert process is not None
    _write(writer, [_row(0)])
    writer.close()
    assert (process.is_alive(), process.exitcode, writer._process) == (False, 0, None)
    ProcessWriter(store.url).close()
    store.dispose()


def test_rows_the_database_rejects_are_stored_one_by_one_in_the_child(tmp_path) -> None:
    """The child keeps the row-by-row fallback: a row the driver cannot bind keeps only its
    position, its neighbours are stored as they are."""
    store = Store(f"sqlite:///{tmp_path}/r.db").create()
    writer = ProcessWriter(store.url).start()
    try:
        rows = [_row(0), _row(1, time_ms=1 << 70), _row(2)]  # beyond SQLite's 64 bits
        assert _write(writer, rows) == 3
        with store.engine.connect() as conn:
            flows = conn.execute(select(events.c.flow_id).order_by(events.c.offset)).scalars()
            assert list(flows) == ["c0", "orders/0/1", "c1"]
    finally:
        writer.close()
        store.dispose()


def test_writer_for_picks_a_thread_for_stores_in_memory(tmp_path) -> None:
    """`auto` writes in a process unless the store lives in this process's memory."""
    memory = Store("sqlite://")
    on_disk = Store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(writer_for(memory), ThreadWriter)
    assert isinstance(writer_for(Store("sqlite:///:memory:")), ThreadWriter)
    assert isinstance(writer_for(on_disk), ProcessWriter)
    assert isinstance(writer_for(on_disk, "thread"), ThreadWriter)
    with pytest.raises(ValueError, match="expected writer 'auto', 'process' or 'thread'"):
        writer_for(on_disk, "fork")
    memory.dispose()
    on_disk.dispose()


# Records handed over undecoded (`Batch.raw`): topic, partition, offset, headers, value, key,
# broker timestamp.
_RAW = [
    ("orders", 0, 10,
     [("ce_specversion", b"1.0"), ("ce_id", b"e10"), ("ce_type", b"order.placed"),
      ("ce_source", b"shop"), ("ce_time", b"2026-01-02T03:04:05.678Z"),
      ("ce_schemaversion", b"1"), ("ce_correlationid", b"c5"),
      ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
     b'{"sku":"A-1","customer":{"email":"a@b.c"}}', b"ord_5", 1_767_323_045_000),
    ("orders", 0, 11, None, b"\x00\x01 garbage", None, None),
    ("orders", 0, 12, None, b'{"eventId":"e12","eventType":"order.shipped","data":{"to":"'
     + b"x" * 100 + b'"}}', None, 1_767_323_046_000),
    # nested 984 deep with a key to redact: withheld the same in either process (the
    # writer's shallower stack once let it store what the ingest could not)
    ("orders", 0, 13, [("ce_specversion", b"1.0"), ("ce_id", b"e13"), ("ce_type", b"x.done"),
                       ("ce_source", b"shop")],
     b'{"a":' * 984 + b'{"email":"x"}' + b"}" * 984, None, None),
]


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_raw_records_are_decoded_by_the_writer_as_the_ingest_would(tmp_path, kind) -> None:
    """Rows handed over and raw records decoded by the writer land together, in the order
    given; the raw ones exactly as `record_row` builds them in the ingest, redacted and
    capped by the writer's own `Redactor` configuration."""
    store = Store(f"sqlite:///{tmp_path}/d.db").create()
    redactor = Redactor(r"sku|email", max_bytes=64)
    writer = (ProcessWriter(store.url, redactor) if kind == "process"
              else ThreadWriter(store, Redactor(r"sku|email", max_bytes=64))).start()
    try:
        assert writer.write(COLUMNS, [_row(0)], list(_RAW), 7000) == 5
        expected = [_row(0), *(record_row(*r, redactor, 7000) for r in _RAW)]
        with store.engine.connect() as conn:
            stored = [tuple(r) for r in conn.execute(
                select(*(events.c[name] for name in COLUMNS)).order_by(events.c.offset))]
        assert stored == expected
        data = [r[COLUMNS.index("data")] for r in stored[1:]]
        assert data[0] == '{"sku":"[REDACTED]","customer":{"email":"[REDACTED]"}}'
        assert json.loads(data[2])["_truncated"] is True  # 64 bytes at most
        assert json.loads(data[3])["_withheld"] is True
        assert stored[4][COLUMNS.index("event_id")] == "e13"
        assert [r[COLUMNS.index("observed_at_ms")] for r in stored] == [1000] + [7000] * 4
        cpu_s = writer.last_cpu_s
        assert (cpu_s is None) if kind == "thread" else (cpu_s is not None and cpu_s >= 0)
    finally:
        writer.close()
        store.dispose()


@pytest.mark.parametrize("kind", ["thread", "process"])
@pytest.mark.parametrize("how", ["deleted", "replaced by another file"])
def test_a_sqlite_file_deleted_or_replaced_under_the_writer_is_unavailable(
        tmp_path, kind: str, how: str) -> None:
    """The store's SQLite file deleted (or another file moved in its place) while the
    collector runs: the open connection went on writing to the file no one can open again,
    and the offsets were committed. Now each batch raises StoreUnavailable, saying so."""
    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}").create()
    writer = writer_for(store, kind).start()
    try:
        assert writer.write(COLUMNS, [_row(0)]) == 1
        path.unlink()
        if how != "deleted":
            other = Store(f"sqlite:///{tmp_path / 'other.db'}").create()
            other.dispose()
            (tmp_path / "other.db").rename(path)
        with pytest.raises(StoreUnavailable, match=rf"the store file .*s\.db was {how} while"):
            writer.write(COLUMNS, [_row(1)])
    finally:
        writer.close()
        store.dispose()


class Text(str):
    """A str subclass, which marshal does not write."""


def test_rows_marshal_cannot_write_cross_the_pipe_pickled(tmp_path) -> None:
    """A batch crosses to the child by marshal; one holding an object marshal refuses (a
    str subclass, say) goes pickled instead and stores the same."""
    from choreoscope.collector.ingest.writer import _packed, _unpacked

    plain = (COLUMNS, [_row(0)], None, 5)
    assert _packed(plain)[:1] == b"m" and _unpacked(_packed(plain)) == plain
    odd = (COLUMNS, [_row(1, type=Text("order.placed"))], None, 5)
    assert _packed(odd)[:1] == b"p" and _unpacked(_packed(odd)) == odd
    store = Store(f"sqlite:///{tmp_path}/m.db").create()
    writer = ProcessWriter(store.url).start()
    try:
        assert (_write(writer, plain[1]), _write(writer, odd[1])) == (1, 1)
        with store.engine.connect() as conn:
            assert list(conn.execute(select(events.c.type)).scalars()) == ["order.placed"] * 2
    finally:
        writer.close()
        store.dispose()
