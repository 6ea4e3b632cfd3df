"""The outbox relay: publish pending outbox rows to Kafka, in `seq` order per aggregate.

    relay = OutboxRelay(outbox, producer, topic_for=lambda aggregatetype: f"{aggregatetype}-events")
    relay.run_forever(stop_event)

Each pass works in rounds. A round, in one database transaction, claims the *head* of
every aggregate that has pending rows (its lowest pending `seq`, if due), sends those rows,
waits for the broker's acks and marks them; the next round claims the next heads. So a row
is never sent while an earlier row of its aggregate is pending, and a failing row holds
back the later rows of its aggregate until it is sent or dead (then they proceed).

Two relays may run against one table. On PostgreSQL the claim is `SELECT ... FOR UPDATE
SKIP LOCKED` and the round's transaction lasts until the acks are marked: a relay skips
heads another relay holds, and the rows behind them stay blocked by the NOT EXISTS test
until that relay commits (row locks never block the service's inserts). SQLite has one
writer lock, which must not be held while Kafka answers (or does not): there the claim is
a short `BEGIN IMMEDIATE` transaction that leases the heads (`next_attempt_at` = now +
lease, so no other relay takes them and the rows behind them stay blocked), the sends
happen with no lock held, and a second short transaction marks the results. A round lasts
about `send_timeout`: no send starts after it (kafka-python's `send` itself may block up to
the producer's `max_block_ms` for metadata, so with the broker away one send is tried per
round, not one per aggregate), and the acks are awaited together until it ends, well inside
the lease. Should a lease still run out, the rows not yet sent are left alone and the marks
apply only to rows still under this round's lease, so a relay that took them over is never
undone.

A send whose ack has not come when its round ends is still in the producer, which delivers
it when the broker answers (or fails it after its `delivery_timeout_ms`): the row is marked
as an attempt and held back (`next_attempt_at`) for that long and a margin, so neither this
relay nor another sends it again meanwhile, which would put a copy on the bus behind the
aggregate's later rows; a later round marks it sent once its ack comes. A record still
unanswered when that time is up (a producer stuck in a state it never leaves) is given up,
logged, and its row is sent again.

Delivery is at least once: a relay that dies between the broker's ack and its commit
leaves the row pending (on SQLite, until its lease expires), and the row is sent again
with the same `ce_id`. Failures count
`attempts`, record `last_error` and back off exponentially; after `max_attempts` the row
is `dead`. Ordering assumes that writes to one aggregate are serialised (as the
aggregate's own row lock does): rows are ordered by `seq` among committed rows.

Each send has a `send {topic}` PRODUCER span whose parent is the span that was current
when the row was written, with `choreoscope.outbox.delay_ms` = publish time - write time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kafka.errors
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
)

from . import _dbapi, semconv, wire
from ._declared_values import SENDING, declare_serialized_values
from ._fastspan import SpanStarter
from ._plain_send import PlainSend
from ._send_inputs import serializers
from .event import Event
from .outbox import STATUS_DEAD, STATUS_PENDING, STATUS_SENT, Outbox
from .traceparent import InvalidTraceparent, format_traceparent, parse_traceparent, remote_context

log = logging.getLogger(__name__)

_TRACER_NAME = "choreoscope.instrumentation.outbox"
_MAX_BACKOFF_S = 300.0
_MAX_ERROR_CHARS = 2000
# Kafka errors that are the record's own, whichever producer sends it (too large, a topic
# name Kafka refuses or the service may not write to, a record the broker finds invalid): a
# row failing with them `max_attempts` times is dead. Every other Kafka error is the bus's
# (retriable ones) or the producer's: one closed, or stuck in a fatal state (an idempotent
# producer whose id the broker forgot fails every send, with errors Kafka does not call
# retriable). The row then stays pending: a new producer sends it.
_RECORD_FAULTS: tuple[type[BaseException], ...] = tuple(
    getattr(kafka.errors, name) for name in (
        "MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidTopicError",
        "TopicAuthorizationFailedError", "InvalidRecordError", "CorruptRecordError",
        "UnsupportedForMessageFormatError", "InvalidTimestampError")
    if isinstance(getattr(kafka.errors, name, None), type))
# Header names the relay writes itself; any other key stored in `headers` goes along as is.
_OWN_HEADERS = frozenset({
    wire.SPECVERSION, wire.ID, wire.TYPE, wire.SOURCE, wire.TIME, wire.SUBJECT,
    wire.SCHEMAVERSION, wire.CORRELATIONID, wire.CAUSATIONID, wire.SEQUENCE,
    wire.CONTENT_TYPE, wire.TRACEPARENT, wire.TRACESTATE,
})


class OutboxRelay:
    """Publishes an `Outbox`'s pending rows through a kafka-python producer.

    `producer` is a `kafka.KafkaProducer` or the `TracedProducer` of `instrument_producer`
    (its plain producer is used: the relay writes the headers and the span itself). A
    producer with its own `value_serializer` / `key_serializer` gets the row's data and
    `aggregateid` as objects, as `publish` gives them (a value it makes that is not JSON gets
    a `content-type` header, as with `publish`); otherwise they go as JSON and UTF-8. Spans
    go to `tracer_provider`, else to the `TracedProducer`'s own, else to the global one.
    `topic_for(aggregatetype) -> topic` defaults to the aggregate type itself. `backoff`
    is the first retry delay in seconds (doubling per attempt, at most 5 minutes) or a
    callable `attempts -> seconds`. After `max_attempts` failed sends a row is `dead` when the
    failure is the row's own (data that cannot be sent, a record Kafka refuses: too large, an
    invalid or forbidden topic); failures of the bus (Kafka's retriable errors: broker away,
    timeouts) or of the producer (closed, or in a fatal state) keep it pending.
    """

    def __init__(
        self,
        outbox: Outbox,
        producer: Any,
        *,
        topic_for: Callable[[str], str] | None = None,
        max_attempts: int = 5,
        tracer_provider: trace.TracerProvider | None = None,
        batch_size: int = 100,
        backoff: float | Callable[[int], float] = 0.5,
        send_timeout: float = 30.0,
    ) -> None:
        if not isinstance(outbox, Outbox):
            raise TypeError(f"expected an Outbox, got {type(outbox).__name__}")
        plain = getattr(producer, "wrapped", producer)
        if not callable(getattr(plain, "send", None)):
            raise TypeError(f"expected a kafka.KafkaProducer, got {type(producer).__name__}")
        if topic_for is not None and not callable(topic_for):
            raise TypeError(f"expected topic_for to be a callable, got {topic_for!r}")
        for name, value in (("max_attempts", max_attempts), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"expected {name} to be a positive integer, got {value!r}")
        if not isinstance(send_timeout, int | float) or isinstance(send_timeout, bool) \
                or send_timeout <= 0:
            raise ValueError(f"expected send_timeout to be seconds > 0, got {send_timeout!r}")
        self.outbox = outbox
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self._producer = plain
        self._plain_send = PlainSend()  # under OpenTelemetry's kafka instrumentation too
        self._serializes_values, self._serializes_keys = serializers(plain)
        # the producer's serializer makes the bytes: a non-JSON value gets its content-type
        self._declares = self._serializes_values and declare_serialized_values(plain)
        self._topic_for = topic_for or (lambda aggregatetype: aggregatetype)
        self._backoff = _backoff_function(backoff)
        self._send_timeout = send_timeout
        # Longer than a send can take: kafka-python blocks up to max_block_ms (60 s by
        # default) for metadata, then the ack may take send_timeout.
        self._lease_ms = round((send_timeout + 90.0) * 1000)
        # How long a row whose record is still in the producer is held back: the producer's
        # delivery timeout (after which it fails the record) and a margin, at least a lease.
        delivery_ms = getattr(plain, "config", {}).get("delivery_timeout_ms")
        self._in_flight_ms = max(self._lease_ms, round(delivery_ms + 30_000)
                                 if isinstance(delivery_ms, int | float) else 0)
        provider = (tracer_provider or getattr(producer, "tracer_provider", None)
                    or trace.get_tracer_provider())
        self._tracer = provider.get_tracer(_TRACER_NAME)
        self._start_span = SpanStarter(self._tracer)
        self._lock = threading.Lock()
        table = outbox.table
        self._sent_sql = (
            f"update {table} set status = ?, attempts = ?, last_attempt_at = ?, sent_at = ?,"
            " next_attempt_at = null, last_error = null where seq = ?"
        )
        self._failed_sql = (
            f"update {table} set status = ?, attempts = ?, last_attempt_at = ?,"
            " next_attempt_at = ?, last_error = ? where seq = ?"
        )
        self._conn: Any = None
        self._conn_thread = 0  # the thread that opened `_conn`
        self._dialect: _dbapi.Dialect | None = None
        self._busy = False
        self._producer_faults_logged: set[type[BaseException]] = set()
        # Sends whose ack had not come when their round ended, by seq: still in the producer.
        self._in_flight: dict[int, _Pending] = {}
        self._stuck_logged = False
        self._stop: threading.Event | None = None

    def run_once(self) -> int:
        """Publish what is due now, round after round; returns the number of rows sent.

        At most `batch_size` rows are attempted, each at most once per call. Database
        errors are raised (the round is rolled back, nothing is marked); send errors are
        recorded on the row.
        """
        with self._lock:
            attempted = sent = 0
            tried: list[int] = []  # failed in this pass: not again until the next one
            cut_short = False
            while attempted < self.batch_size and not self._stopping():
                claimed, ok, cut_short = self._round(self.batch_size - attempted, tried)
                attempted += claimed
                sent += ok
                if claimed == 0 or cut_short:
                    break
            self._busy = attempted >= self.batch_size and not cut_short
            return sent

    def run_forever(self, stop_event: threading.Event | None = None, interval: float = 1.0) -> None:
        """Run passes until `stop_event` is set, pausing `interval` seconds when idle.

        A failing pass (e.g. the database is unreachable) is logged and retried.
        """
        stop = stop_event or threading.Event()
        self._stop = stop  # a round starts no more sends once it is set
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:
                    log.exception("outbox relay pass failed; retrying in %.1fs", interval)
                    self._busy = False
                if not self._busy:  # a full pass: there may be more, go on at once
                    stop.wait(interval)
        finally:
            self._stop = None
            self.close()

    def close(self) -> None:
        """Close the relay's database connection (the producer is the caller's). Sends still
        awaiting their ack end their spans now; the relay remembers them, so used again it
        still marks their rows sent once acked (another relay leaves them alone meanwhile)."""
        with self._lock:
            self._drop_connection()
            for pending in self._in_flight.values():
                pending.end_span("the relay closed before the broker's ack")

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # -- one round: claim heads, send, wait for acks, mark, commit ---------------------

    def _round(self, limit: int, tried: list[int]) -> tuple[int, int, bool]:
        """(rows claimed, rows sent, whether the round ended before sending all it claimed)."""
        conn, dialect = self._connection()
        try:
            cur = _dbapi.tuple_cursor(conn)  # whatever row factory the outbox's connections have
            self._begin(conn, cur, dialect)
            acked = self._mark_acked_in_flight(cur, dialect)
            now_ms = _now_ms()
            # A row whose earlier send is still in flight is not sent again (nor, being its
            # aggregate's head, are the rows behind it).
            cur.execute(*self._claim_sql(dialect, now_ms, limit, [*tried, *self._in_flight]))
            rows = [_Row(*r) for r in cur.fetchall()]
            leased = bool(rows) and not dialect.postgres
            lease_until = now_ms + self._lease_ms
            guard: tuple[Any, ...] = ()
            if leased:
                # SQLite has one writer lock: lease the rows and let the service's writers
                # in while the sends are in flight. A relay that dies leaves a lease that
                # expires: the rows are then sent again, with the same ids.
                cur.execute(*self._lease_sql(dialect, rows, lease_until))
                conn.commit()
                guard = (dialect.time_param(lease_until),)
            # No send starts once the round's time is up (each may block for metadata) or the
            # relay is stopping; the acks are then awaited together until that same time.
            deadline = time.monotonic() + self._send_timeout
            sends: list[_Pending] = []
            for row in rows:
                if (sends and time.monotonic() >= deadline) or self._stopping():
                    sends.append(_Pending(None, None, _NOT_SENT))
                else:
                    sends.append(self._send(row, dialect, lease_until if leased else None))
            results = [(row, pending, pending.wait(max(0.0, deadline - time.monotonic())),
                        _now_ms()) for row, pending in zip(rows, sends, strict=True)]
            give_up_at = time.monotonic() + self._in_flight_ms / 1000
            for row, pending, _, _ in results:  # before any mark, which may fail
                if pending.in_flight:
                    pending.give_up_at = give_up_at
                    self._in_flight[row.seq] = pending
            if leased:
                self._begin(conn, cur, dialect)
            sent = [self._sent_params(dialect, row, done_ms) + guard
                    for row, _, error, done_ms in results if error is None]
            failed = [self._failed_params(dialect, row, done_ms, error) + guard
                      for row, _, error, done_ms in results
                      if error is not None and error is not _NOT_SENT]
            unsent = [(row.seq, *guard) for row, _, error, _ in results if error is _NOT_SENT]
            tried.extend(row.seq for row, _, error, _ in results if error is not None)
            # One statement per kind of mark: psycopg pipelines executemany, sqlite3 loops in C.
            # On SQLite a mark applies only while the row is still under this round's lease:
            # a relay that took over an expired lease owns the row's state from then on.
            held = _LEASE_HELD if leased else ""
            if sent:
                cur.executemany(dialect.sql(self._sent_sql + held), sent)
            if failed:
                cur.executemany(dialect.sql(self._failed_sql + held), failed)
            if unsent and leased:  # never tried: due again at once, no attempt counted
                cur.executemany(dialect.sql(
                    f"update {self.outbox.table} set next_attempt_at = null where seq = ?"
                    + held), unsent)
            conn.commit()
            return len(rows), acked + len(sent), bool(unsent)
        except BaseException:
            self._drop_connection()
            raise

    def _mark_acked_in_flight(self, cur: Any, dialect: _dbapi.Dialect) -> int:
        """Settle the sends in flight whose ack (or failure) came after their round: an ack
        marks the row sent, unless it is no longer pending (another relay sent it, or it is
        dead); a failure leaves the row as its round marked it, to be sent again. Returns how
        many acks came."""
        acked = []
        now = time.monotonic()
        for seq, pending in list(self._in_flight.items()):
            outcome = pending.settle()
            if outcome is _STILL_IN_FLIGHT:
                if now < pending.give_up_at:
                    continue
                pending.end_span(f"no answer from the producer within {self._in_flight_ms} ms")
                if not self._stuck_logged:
                    self._stuck_logged = True
                    log.warning("outbox relay: a record has been in its producer for over %d ms "
                                "with no ack and no error; its row (seq %s) is sent again. A "
                                "producer that never answers is stuck (an idempotent "
                                "kafka-python producer after a broker outage can be): start "
                                "a new one", self._in_flight_ms, seq)
            del self._in_flight[seq]
            if outcome is None:
                at = dialect.time_param(_now_ms())
                acked.append((STATUS_SENT, at, at, seq))
        if acked:
            cur.executemany(dialect.sql(
                f"update {self.outbox.table} set status = ?, last_attempt_at = ?, sent_at = ?,"
                f" next_attempt_at = null, last_error = null where seq = ?"
                f" and status = '{STATUS_PENDING}'"), acked)
        return len(acked)

    def _claim_sql(
        self, dialect: _dbapi.Dialect, now_ms: int, limit: int, tried: list[int]
    ) -> tuple[str, tuple[Any, ...]]:
        t = self.outbox.table
        # Each aggregate's head: its lowest pending seq. An aggregate is (aggregatetype,
        # aggregateid): `customers/42` never waits for `orders/42`. Computed once per claim from the
        # partial index on pending rows, whatever the planner's statistics say (a young
        # table has none); then the heads are fetched and locked by primary key. A row's
        # status only ever leaves `pending`, so a head seen here is never preceded by a
        # pending row that this snapshot missed.
        heads = (
            f"select min(p.seq) from {t} p where p.status = '{STATUS_PENDING}'"
            " group by p.aggregatetype, p.aggregateid"
        )
        where = f"o.seq = any(array({heads}))" if dialect.postgres else f"o.seq in ({heads})"
        skip = f" and o.seq not in ({', '.join('?' * len(tried))})" if tried else ""
        lock = " for update of o skip locked" if dialect.postgres else ""
        sql = (
            f"select {_columns(dialect)} from {t} o"
            # Statuses are literals, never parameters: a prepared statement's generic plan
            # can then still use the partial index `... where status = 'pending'`.
            f" where {where} and o.status = '{STATUS_PENDING}'"
            " and (o.next_attempt_at is null or o.next_attempt_at <= ?)"
            f"{skip} order by o.seq limit ?{lock}"
        )
        return dialect.sql(sql), (dialect.time_param(now_ms), *tried, limit)

    def _lease_sql(
        self, dialect: _dbapi.Dialect, rows: list[_Row], until_ms: int
    ) -> tuple[str, tuple[Any, ...]]:
        sql = (
            f"update {self.outbox.table} set next_attempt_at = ?"
            f" where seq in ({', '.join('?' * len(rows))})"
        )
        return dialect.sql(sql), (dialect.time_param(until_ms), *(r.seq for r in rows))

    def _sent_params(self, dialect: _dbapi.Dialect, row: _Row, now_ms: int) -> tuple[Any, ...]:
        at = dialect.time_param(now_ms)
        return (STATUS_SENT, row.attempts + 1, at, at, row.seq)

    def _failed_params(
        self, dialect: _dbapi.Dialect, row: _Row, now_ms: int, error: BaseException
    ) -> tuple[Any, ...]:
        attempts = row.attempts + 1
        message = f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
        # Errors Kafka calls retriable (broker unreachable, timeouts, leader moves) are the
        # bus's, not the row's: the row backs off and stays pending however long they last.
        # So do the producer's own failures (closed under the relay, fatal state): only a
        # record's fault (`_record_fault`) counts towards `dead`.
        if _producer_fault(error) and type(error) not in self._producer_faults_logged:
            self._producer_faults_logged.add(type(error))
            log.error("outbox relay: its producer fails sends with %s; rows stay pending until "
                      "a producer that works sends them (a closed producer, or one in a fatal "
                      "state, never recovers: start a new one)", message)
        if isinstance(error, _NoAckYet):  # held back while the producer may still deliver it
            status, next_at = STATUS_PENDING, now_ms + self._in_flight_ms
        elif attempts >= self.max_attempts and _record_fault(error):
            status, next_at = STATUS_DEAD, None
            log.warning("outbox row %s (%s %s) is dead after %d attempts: %s",
                        row.seq, row.aggregatetype, row.aggregateid, attempts, message)
        else:
            status = STATUS_PENDING
            next_at = now_ms + round(self._backoff(attempts) * 1000)
        return (status, attempts, dialect.time_param(now_ms), dialect.time_param(next_at),
                message, row.seq)

    # -- sending one row ------------------------------------------------------------------

    def _send(self, row: _Row, dialect: _dbapi.Dialect, lease_until: int | None = None
              ) -> _Pending:
        """Start sending `row`; a failure before the send is returned as a finished pending.
        Past `lease_until` (earlier sends blocked that long) the row is not sent: another
        relay may own it by now, and a late copy would follow its aggregate's later rows."""
        if lease_until is not None and _now_ms() >= lease_until:
            return _Pending(None, None, _LeaseExpired(
                "the relay's lease on this row expired before it could be sent"))
        try:
            topic = self._topic_for(row.aggregatetype) if row.topic is None else row.topic
            stored = _dbapi.json_from_text(row.headers)
            if not isinstance(stored, dict):
                raise ValueError(
                    f"expected headers to be a JSON object, got {type(stored).__name__}")
            event = self._event(row, stored)
            data = _dbapi.json_from_text(row.payload)
            if self._serializes_values:  # the producer's serializer gets the data, as publish does
                value, content_type = data, None
            else:
                value, content_type = wire.encode_value(data)
            extra = _extra_headers(stored)
        except Exception as exc:  # noqa: BLE001 - a bad row is the row's failure, not the relay's
            return _Pending(None, None, exc)
        parent, tracestate = _stored_context(row.tracingspancontext, row.tracingspancontext_json)
        key = row.aggregateid
        attributes: dict[str, Any] = semconv.send_attributes(topic, event, key)
        created_ms = _dbapi.time_ms(row.created_at)
        if created_ms is not None:
            attributes[semconv.OUTBOX_DELAY_MS] = max(0, _now_ms() - created_ms)
        span = self._start_span(semconv.send_span_name(topic), parent, SpanKind.PRODUCER,
                                attributes)
        try:
            ctx = span.get_span_context()
            traceparent = None
            if ctx.is_valid:
                traceparent = format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)
                tracestate = ctx.trace_state.to_header() or tracestate
            headers = wire.encode_headers(event, traceparent, tracestate, content_type) + extra
            send = self._plain_send(self._producer)
            if self._declares:
                SENDING.ours = True
            try:
                future = send(topic, value=value,
                              key=key if self._serializes_keys else key.encode(),
                              headers=headers)
            finally:
                SENDING.ours = False
        except Exception as exc:  # noqa: BLE001 - recorded on the row and the span
            return _Pending(span, None, exc)
        except BaseException:
            span.end()
            raise
        return _Pending(span, future, None)

    def _event(self, row: _Row, stored: dict[str, Any]) -> Event:
        def get(name: str) -> str | None:
            value = stored.get(name)
            return None if value is None or value == "" else str(value)

        return Event(
            id=str(row.id),  # the row's id is the event id, on every retry
            type=get(wire.TYPE) or row.type,
            source=get(wire.SOURCE) or self.outbox.service,
            subject=get(wire.SUBJECT) or row.aggregateid,
            correlation_id=get(wire.CORRELATIONID),
            causation_id=get(wire.CAUSATIONID),
            schema_version=get(wire.SCHEMAVERSION) or "1",
            time=get(wire.TIME),
            sequence=int(row.seq),
        )

    # -- the relay's own connection -----------------------------------------------------

    def _connection(self) -> tuple[Any, _dbapi.Dialect]:
        thread = threading.get_ident()
        if (self._conn is not None and self._conn_thread != thread and self._dialect is not None
                and not self._dialect.postgres):
            # a sqlite3 connection refuses other threads unless opened to allow them (one
            # from the caller's own callable may not be): this thread gets its own
            self._drop_connection()
        if self._conn is None:
            self._conn, self._dialect = self.outbox._open()
            self._conn_thread = thread
        assert self._dialect is not None
        return self._conn, self._dialect

    def _begin(self, conn: Any, cur: Any, dialect: _dbapi.Dialect) -> None:
        if not dialect.postgres:
            cur.execute("begin immediate")  # one writer: no other relay claims meanwhile
        elif getattr(conn, "autocommit", False):
            cur.execute("begin")  # the row locks must last until the marks are committed

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for step in (conn.rollback, conn.close):
            try:
                step()
            except Exception:  # a broken connection is being thrown away
                log.debug("closing the relay connection failed", exc_info=True)


def _columns(dialect: _dbapi.Dialect) -> str:
    """The select list of a claim, in `_Row`'s order: JSON columns read as text."""
    return (
        "o.seq, o.id, o.aggregatetype, o.aggregateid, o.type,"
        f" {_dbapi.as_text('o.payload')}, {_dbapi.as_text('o.headers')},"
        f" {_dbapi.as_text('o.tracingspancontext')}, o.topic, o.created_at, o.attempts,"
        f" {dialect.is_json('o.tracingspancontext')}"
    )


@dataclass(slots=True)
class _Row:
    seq: int
    id: Any
    aggregatetype: str
    aggregateid: str
    type: str
    payload: str | None
    """JSON text (`_dbapi.as_text`), whether the column is jsonb, json or text."""
    headers: str | None
    """JSON text, like `payload`."""
    tracingspancontext: str | None
    topic: str | None
    created_at: Any
    attempts: int
    tracingspancontext_json: Any
    """True if `tracingspancontext` is a json/jsonb column (a table made by hand)."""


@dataclass(slots=True)
class _Pending:
    """A send in flight: its span, kafka-python future, or the error that stopped it."""

    span: Span | None
    future: Any
    error: BaseException | None
    in_flight: bool = False
    """The wait ended before the ack: the record is still in the producer, its span open."""
    give_up_at: float = 0.0
    """While `in_flight`: the monotonic time after which nobody waits for it any more."""

    def wait(self, timeout: float) -> BaseException | None:
        """Wait for the ack, end the span; the error if the send failed, else None. With no
        ack within `timeout` the span stays open (`in_flight`) until `settle` sees one."""
        error = self.error
        if error is None:
            try:
                self.future.get(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - recorded on the row and the span
                future = self.future
                if getattr(future, "is_done", True) is False:
                    self.in_flight = True
                    return _NoAckYet(f"no ack within the round ({exc}); the record is still "
                                     "in the producer and is not sent again meanwhile")
                # the ack may land between the wait giving up and the look at the future
                succeeded = getattr(future, "succeeded", None)
                error = None if callable(succeeded) and succeeded() else exc
            except BaseException:
                if self.span is not None:
                    self.span.end()
                raise
        self._end_span(error)
        return error

    def settle(self) -> BaseException | object | None:
        """For a send `in_flight`: `_STILL_IN_FLIGHT`, else (its span ended) None once acked
        or the error it failed with."""
        if not self.future.is_done:
            return _STILL_IN_FLIGHT
        self.in_flight = False
        error = self.future.exception
        self._end_span(error)
        return error

    def end_span(self, why: str) -> None:
        """End the span of a send in flight now (`why` its error), before its outcome."""
        self._end_span(_NoAckYet(why))

    def _end_span(self, error: BaseException | None) -> None:
        span, self.span = self.span, None  # ended once
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
        span.end()


def _stored_context(text: str | None, is_json: Any = False) -> tuple[Context, str | None]:
    """The parent context for the send span, from `tracingspancontext`, and its tracestate.

    The column holds `traceparent=...` / `tracestate=...` lines (Debezium's format). A table
    made by hand may declare it json/jsonb (`is_json`): then it holds those lines as a JSON
    string, or an object `{"traceparent": ..., "tracestate": ...}`.
    """
    root = Context()  # never the relay's own ambient span
    if is_json and text:
        try:
            stored = json.loads(text)
        except ValueError as exc:
            log.debug("ignoring a stored trace context: %s", exc)
            return root, None
        if isinstance(stored, dict):
            stored = "\n".join(f"{k}={v}" for k, v in stored.items() if isinstance(v, str))
        text = stored if isinstance(stored, str) else None
    if not text:
        return root, None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            fields.setdefault(name.strip().lower(), value.strip())
    try:
        parsed = parse_traceparent(fields.get("traceparent", ""))
    except InvalidTraceparent as exc:
        log.debug("ignoring a stored trace context: %s", exc)
        return root, None
    tracestate = fields.get("tracestate") or None
    return remote_context(parsed, tracestate, root), tracestate


def _extra_headers(stored: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Keys of the `headers` column the relay does not write itself, as record headers."""
    return [
        (str(name), str(value).encode())
        for name, value in stored.items()
        if name not in _OWN_HEADERS and value is not None
    ]


def _backoff_function(backoff: float | Callable[[int], float]) -> Callable[[int], float]:
    if callable(backoff):
        return backoff
    if isinstance(backoff, int | float) and not isinstance(backoff, bool) and backoff >= 0:
        base = float(backoff)
        return lambda attempts: min(base * 2 ** (attempts - 1), _MAX_BACKOFF_S)
    raise ValueError(
        "expected backoff to be seconds (a number >= 0) or a callable attempts -> seconds, "
        f"got {backoff!r}"
    )


def _record_fault(error: BaseException) -> bool:
    """Whether a failed send is the row's fault: its data could not be made a record (any
    error before the send), or Kafka refused the record itself (`_RECORD_FAULTS`)."""
    if getattr(error, "retriable", False) is True:
        return False
    if isinstance(error, kafka.errors.KafkaError):
        return isinstance(error, _RECORD_FAULTS)
    return True


def _producer_fault(error: BaseException) -> bool:
    """A Kafka error neither retriable nor the record's: the producer's own state."""
    return (isinstance(error, kafka.errors.KafkaError) and error.retriable is not True
            and not isinstance(error, _RECORD_FAULTS))


class _NoAckYet(TimeoutError):
    """No ack when the round ended, the record still in the producer: the bus's delay,
    never the row's fault."""

    retriable = True


class _NotSent(TimeoutError):
    """A claimed row the round had no time left to send: no attempt, no mark."""

    retriable = True


_NOT_SENT = _NotSent("the round ended before this row's turn")
_STILL_IN_FLIGHT = object()


class _LeaseExpired(TimeoutError):
    """A row not sent because its lease ran out first: the relay's delay, never the row's
    fault, so it never makes the row dead (Kafka's word for such errors: retriable)."""

    retriable = True


# On SQLite: the row is still pending under the lease this round took (its parameter last).
_LEASE_HELD = " and status = 'pending' and next_attempt_at = ?"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
