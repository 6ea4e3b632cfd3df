"""The bus ingest loop: consume every matching topic with confluent-kafka, store, commit.

At-least-once into the store, exactly-once in effect: a batch is written to `events` in one
transaction, THEN its offsets (+1) are committed synchronously; re-reading a record changes
nothing because rows are keyed by (topic, partition, offset). While the store is unreachable
the batch is retried with backoff and no offset is committed.

Pipelined (the default), a writer thread stores batch N while the consuming thread decodes
batch N+1; offsets are still committed by the consuming thread, only for stored batches.
The writer thread hands the rows to a child process that owns its own connection to the
store (ingest/writer.py), so decoding and the database work use both cores; the child
decodes the last part of each batch too, as much as keeps both processes equally busy
(ingest/share.py).
"""

from __future__ import annotations

import collections
import gc
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ..admin import admin_client
from .batch import Batch, StoreUnavailable, build_batch
from .redact import Redactor
from .rows import COLUMNS
from .share import DecodeShare
from .topics import TopicGenerations
from .writer import ProcessWriter, writer_for

log = logging.getLogger(__name__)

DEFAULT_GROUP = "choreoscope-collector"
WRITE_WINDOW = 2  # batches handed to the batch writer before waiting for the oldest
ANSWER_PATIENCE_S = 30.0  # waiting longer for the writer's answer is logged
METADATA_REFRESH_MS = 5000
# librdkafka options that hold secrets: passwords, client secrets, JAAS and OAUTHBEARER
# configs (which carry secrets inline), private keys inline (ssl.key.pem) or as keys
_SECRET_OPTION = re.compile(r"password|secret|token|jaas|key$|pem$|oauthbearer\.config|"
                            r"credential", re.IGNORECASE)


class BusIngest:
    """Consume the topics matching `topics` (a regex) into `store`, batch by batch."""

    def __init__(
        self,
        store: Any,
        *,
        bootstrap: str,
        topics: str = "^.*",
        group: str = DEFAULT_GROUP,
        start: str = "earliest",
        redactor: Redactor | None = None,
        batch_size: int = 5000,
        batch_timeout_s: float = 0.5,
        kafka_options: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        pipelined: bool = True,
        writer: str = "auto",
    ) -> None:
        if start not in ("earliest", "latest"):
            raise ValueError(f"expected start 'earliest' or 'latest', got {start!r}")
        self.store = store
        self.pattern = topics if topics.startswith("^") else "^" + topics
        self.group = group
        self.redactor = redactor or Redactor()
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.clock = clock
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": start,
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            "error_cb": kafka_error_logger(),
            "on_commit": self._on_commit,
            "logger": logging.getLogger("choreoscope.collector.kafka"),
            "log_level": 0,  # librdkafka's own lines repeat what error_cb reports
        }
        self.config.update(kafka_options or {})
        self.consumer: Consumer | None = None
        self.records = 0  # records consumed (stored or skipped)
        self.inserted = 0  # rows new to the store
        self.batches = 0
        self.store_failures = 0
        self.store_failing = False  # the last attempt to store a batch failed
        self.commit_failures = 0
        self.last_offsets: dict[tuple[str, int], int] = {}  # of the last batch committed
        self.consumed_offsets: dict[tuple[str, int], int] = {}  # next offset read, per partition
        self.assignments = 0  # rebalances that gave this member its partitions (maybe none)
        self.pipelined = pipelined
        # A writer process decodes part of each batch with a `Redactor` of the same pattern
        # and size cap; with a redactor of the caller's own kind all is decoded here. So is
        # everything for a writer in this process, where sharing would gain nothing.
        plain = type(self.redactor) is Redactor
        self.writer = writer_for(store, writer, self.redactor if plain else None)
        self.share: DecodeShare | None = (
            DecodeShare() if plain and isinstance(self.writer, ProcessWriter) else None)
        self._cpu_s = time.process_time()  # this process's CPU when the last batch was read
        self.generations = TopicGenerations(
            store, lambda: admin_client(bootstrap, kafka_options), clock=clock)
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._write_thread: threading.Thread | None = None
        self._stop: threading.Event | None = None  # the caller's stop, seen by the writer
        self._stored: collections.deque[Batch] = collections.deque()  # stored, not committed
        self._dropped = False  # a batch was given up uncommitted: nothing more is committed
        # With start 'latest': the topics whose history is skipped (those there at start),
        # and where this run started each of their partitions.
        self._history: set[str] | None = None
        self._latest_start: dict[tuple[str, int], int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> BusIngest:
        if self.consumer is None:
            self.writer.start()
            self.consumer = Consumer(self.config)
            if self.config["auto.offset.reset"] == "latest":
                self._history = self._matching_topics()
            self.consumer.subscribe([self.pattern], on_assign=self._on_assign,
                                    on_revoke=self._on_revoke)
            if self.pipelined:
                self._write_thread = threading.Thread(target=self._write_loop, daemon=True,
                                                      name="choreoscope-ingest-writer")
                self._write_thread.start()
            log.info("ingest: group %s subscribed to %s (options %s)", self.group, self.pattern,
                     describe_options(self.config))
        return self

    def close(self) -> None:
        """Store and commit the batches in hand (unless the caller's stop gave up on an
        unreachable store), then leave the group."""
        if self._write_thread is not None:
            self._queue.put(None)
            self._write_thread.join()
            self._write_thread = None
        self._commit_stored()
        self.writer.close()
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("ingest: closing the consumer failed: %s", exc)

    def __enter__(self) -> BusIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch -------------------------------------------------------------------------

    def step(self, stop: threading.Event | None = None, timeout_s: float | None = None) -> int:
        """Consume one batch and have it stored, then its offsets committed. Returns records
        consumed. Pipelined, the batch is handed to the writer thread (at most two wait), so
        decoding the next batch overlaps storing this one; `records` counts stored ones.

        When `stop` is set while the store is unreachable, batches are dropped uncommitted:
        they are read again by the next run."""
        consumer = self.start().consumer
        assert consumer is not None
        if stop is not None:
            self._stop = stop
        self._commit_stored(asynchronous=True)
        if self._dropped:
            return 0  # a batch was given up: stop reading, the next run starts from it
        batch = self._consume_batch(consumer, timeout_s)
        if batch is None:
            return 0
        self.consumed_offsets.update(batch.offsets)
        if not self.pipelined:
            self._write(batch)
            self._commit_stored(asynchronous=True)
            return batch.consumed
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return batch.consumed
            except queue.Full:
                if stop is not None and stop.is_set():
                    self._dropped = True  # not committed: read again next time
                    return 0

    def _consume_batch(self, consumer: Any, timeout_s: float | None) -> Batch | None:
        """The next batch of records, decoded into rows; None when none came in time.

        The cyclic garbage collector is paused from the consume to the rows: each record
        comes with a dozen objects it tracks (the message, its header list and tuples), which
        reference counting frees once the rows are built. A collection in between would walk
        them all, about 6 µs of the 27 µs per record the main thread spends. The pause is
        process-wide and lasts at most the consume's timeout plus the decoding; the other
        threads' garbage waits for it, none is lost."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            messages = consumer.consume(
                num_messages=self.batch_size,
                timeout=self.batch_timeout_s if timeout_s is None else timeout_s,
            )
            if not messages:
                return None
            share = self.share
            batch = build_batch(messages, self.redactor, int(self.clock() * 1000),
                                share.deferred(len(messages)) if share else 0)
            batch.consumed = len(messages) - batch.errors
            cpu_s = time.process_time()
            batch.cpu_s, self._cpu_s = cpu_s - self._cpu_s, cpu_s
            del messages
            return batch
        finally:
            if enabled:
                gc.enable()

    def drain(self) -> None:
        """Wait until every batch handed over so far is stored (or dropped), and commit."""
        if self._write_thread is not None:
            self._queue.join()
        self._commit_stored()

    def _write_loop(self) -> None:
        """Hand batches to the batch writer, up to WRITE_WINDOW at a time, and record each
        as stored in the order read: the writer stores batch N while batch N+1 is already
        on its way to it."""
        sent: collections.deque[Batch] = collections.deque()
        while True:
            if sent:
                try:
                    batch = self._queue.get(timeout=0.005)
                except queue.Empty:
                    if self.writer.ready(0.005):
                        self._settle(sent)
                    continue
            else:
                batch = self._queue.get()
            if batch is None:
                while sent:
                    self._settle(sent)
                self._queue.task_done()
                return
            if self._dropped:
                self._queue.task_done()
                continue
            try:
                self.writer.send(COLUMNS, batch.rows, batch.raw, batch.observed_at_ms)
            except StoreUnavailable as exc:  # the batches sent before it come first
                self._recover([*sent, batch], batch, exc)
                sent.clear()
                continue
            sent.append(batch)
            if len(sent) >= WRITE_WINDOW:
                self._settle(sent)

    def _settle(self, sent: collections.deque[Batch]) -> None:
        """Read the writer's answer for the oldest batch sent (saying so while it takes
        long: a locked or stopped store shows in the log before its error comes)."""
        batch = sent[0]
        waited_s = 0.0
        while not self.writer.ready(ANSWER_PATIENCE_S):
            waited_s += ANSWER_PATIENCE_S
            log.warning("ingest: the store writer has not answered for %.0fs (store locked "
                        "or slow?); offsets not committed", waited_s)
        failure: StoreUnavailable | None = None
        try:
            inserted = self.writer.receive()
        except StoreUnavailable as exc:
            failure = exc
        except Exception as exc:  # never let the writer thread die; later batches wait
            log.exception("ingest: writing a batch failed")
            failure = StoreUnavailable(f"{type(exc).__name__}: {exc}")
        if failure is not None:
            self._recover(list(sent), batch, failure)
            sent.clear()
            return
        sent.popleft()
        self.inserted += inserted
        self.store_failing = False
        if self.share is not None:
            self.share.update(batch.cpu_s, self.writer.last_cpu_s)
        self._stored.append(batch)
        self._queue.task_done()

    def _recover(self, batches: list[Batch], failed: Batch,
                 failure: StoreUnavailable) -> None:
        """After `failed` did not reach the store: `batches` are those handed to the writer
        and not settled, oldest first, `failed` among them. The answers still due for the
        others are read; each is then recorded as stored in order, `failed` and those whose
        answer was a failure stored again (retrying with backoff). A batch is never
        recorded as stored before one read earlier: its offsets would be committed first."""
        answers: dict[int, int | None] = {}
        for batch in batches:
            if batch is not failed:  # the answers come in the order sent
                try:
                    answers[id(batch)] = self.writer.receive()
                except Exception:  # noqa: BLE001 - stored again below
                    answers[id(batch)] = None
        for batch in batches:
            try:
                inserted = answers.get(id(batch))
                if inserted is None:
                    self._write(batch, failure if batch is failed else None)
                elif not self._dropped:
                    self.inserted += inserted
                    self.store_failing = False
                    self._stored.append(batch)
            finally:
                self._queue.task_done()

    def _write(self, batch: Batch, failure: StoreUnavailable | None = None) -> None:
        """Store a batch, retrying while the store is unreachable; its offsets wait for the
        main thread to commit: librdkafka's synchronous commit stalls when issued beside a
        running consume().

        Once a batch was given up (stopping while the store is down), no later batch is
        stored or committed: its offsets would move the group past the lost batch."""
        if self._dropped:
            return
        if self._store(batch, self._stop, failure):
            self._stored.append(batch)
        else:
            self._dropped = True

    def _commit_stored(self, asynchronous: bool = False) -> None:
        """Commit the offsets of every batch stored so far (main thread). While ingesting the
        commit is asynchronous (a synchronous one held up the next consume for a broker
        round trip per batch); draining, closing and handing partitions over wait for it."""
        if not self._stored:
            return
        merged = Batch()
        done = []
        while self._stored:
            batch = self._stored.popleft()
            merged.offsets.update(batch.offsets)
            done.append(batch)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ingest: %d records stored, committing %s",
                      sum(b.consumed for b in done),
                      ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(merged.offsets.items())))
        self._commit(merged, asynchronous)
        self.last_offsets = merged.offsets
        for batch in done:
            self.records += batch.consumed
            self.batches += 1

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """A topic created again under an old name (ingest/topics.py): its old events were
        renamed; read the new topic from its start, not from offsets committed for the old."""
        self.assignments += 1
        _log_assign(consumer, partitions)
        try:
            recreated = self.generations.recreated(tp.topic for tp in partitions)
            starts = self._latest_starts(consumer, partitions)
        except Exception:  # the assignment itself must go through
            log.exception("ingest: checking the assigned topics failed")
            return
        if recreated or starts:
            for tp in partitions:
                if tp.topic in recreated:
                    tp.offset = OFFSET_BEGINNING
                elif (tp.topic, tp.partition) in starts:
                    tp.offset = starts[(tp.topic, tp.partition)]
            consumer.assign(partitions)

    def _latest_starts(self, consumer: Any, partitions: list[TopicPartition]
                       ) -> dict[tuple[str, int], int]:
        """With start 'latest', where each assigned partition without a committed offset
        starts. Only a new group skips history, and only of the topics there at its start:
        from their end when first assigned (kept for later assignments of this run, so a
        rebalance never skips what came meanwhile). Topics created later, and every
        partition of a group that has committed before (a restart), start at their first
        record. The ends a new group starts at are committed at once: a group stopped
        before it read a record is known when it starts again, and reads what came
        meanwhile."""
        if self._history is None:
            return {}
        committed = consumer.committed(partitions, timeout=10)
        unread = [(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        known_group = len(unread) < len(committed)
        starts: dict[tuple[str, int], int] = {}
        skipped: list[TopicPartition] = []
        for key in unread:
            if key in self._latest_start:
                starts[key] = self._latest_start[key]
            elif known_group or key[0] not in self._history:
                starts[key] = OFFSET_BEGINNING
            else:
                _low, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)
                self._latest_start[key] = starts[key] = high
                skipped.append(TopicPartition(*key, high))
        if skipped:
            try:
                consumer.commit(offsets=skipped, asynchronous=False)
            except KafkaException as exc:
                log.warning("ingest: could not commit where --from latest starts (%s); if "
                            "this collector stops before it reads a record, its next start "
                            "skips what came meanwhile", exc)
        return starts

    def _matching_topics(self) -> set[str] | None:
        """The topics matching the pattern now; None when the broker does not say."""
        assert self.consumer is not None
        try:
            topics = self.consumer.list_topics(timeout=10).topics
        except KafkaException as exc:
            log.warning("ingest: could not list the topics there at start (%s); with --from "
                        "latest, topics created later may lose their first records", exc)
            return None
        pattern = re.compile(self.pattern)
        return {name for name in topics if pattern.match(name)}

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Commit what was read before the partitions move to another member.
        self.drain()
        log.info("ingest: revoked %d partitions", len(partitions))

    def _store(self, batch: Batch, stop: threading.Event | None,
               failure: StoreUnavailable | None = None) -> bool:
        """Store `batch`, retrying with backoff while the store is unreachable; `failure`
        is an attempt already made. False when `stop` was set meanwhile."""
        delay = 0.5
        while True:
            if failure is None:
                try:
                    self.inserted += self.writer.write(COLUMNS, batch.rows, batch.raw,
                                                       batch.observed_at_ms)
                    self.store_failing = False
                    return True
                except StoreUnavailable as exc:
                    failure = exc
            self.store_failures += 1
            self.store_failing = True
            log.warning("ingest: store unavailable (%s); retrying in %.1fs, offsets not "
                        "committed", failure, delay)
            failure = None
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _commit(self, batch: Batch, asynchronous: bool = False) -> None:
        if not batch.offsets or self.consumer is None:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._commit_failed(exc)

    def _on_commit(self, error: Any, _partitions: list[TopicPartition]) -> None:
        """librdkafka's report of an asynchronous commit (served by consume; synchronous
        commits raise instead)."""
        if error is not None:
            self._commit_failed(error)

    def _commit_failed(self, error: Any) -> None:
        # The rows are stored; records read again after a rebalance are ignored by key.
        self.commit_failures += 1
        log.warning("ingest: offset commit failed (%s); records may be read again", error)

    # -- loops -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; the batches in hand are stored and committed first."""
        self.start()
        idle = _Unassigned(time.monotonic())
        while not stop.is_set():
            try:
                self.step(stop)
                assert self.consumer is not None
                idle.check(bool(self.consumer.assignment()), time.monotonic(), self.group)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if error is not None and hasattr(error, "fatal") and error.fatal():
                    raise
                log.warning("ingest: %s; going on", exc)
                stop.wait(1.0)
        self.drain()

    def check_config(self) -> None:
        """Raise ValueError when librdkafka rejects the consumer configuration."""
        try:
            Consumer({**self.config, "error_cb": _ignore}).close()
        except (KafkaException, ValueError, TypeError) as exc:
            raise ValueError(f"expected valid Kafka consumer options, got {exc}") from None

    def run_to_end(self, stop: threading.Event | None = None, idle_timeout_s: float = 30.0,
                   metadata_timeout_s: float = 10.0, overrun_s: float = 10.0) -> int:
        """Ingest until every matching partition reaches the end offset it had at the start
        (`--once`). Returns records consumed.

        Once the end offsets are reached, reading goes on until a batch comes back empty (at
        most `overrun_s` more): some brokers (Tansu) report a high watermark below the last
        record of a produced batch. Gives up after `idle_timeout_s` without progress. The
        group's committed offsets are asked for with `metadata_timeout_s`; a broker that holds
        that request while the group joins only delays them (they are asked for again)."""
        consumer = self.start().consumer
        assert consumer is not None
        targets = self._end_offsets(metadata_timeout_s)
        position = self._committed(list(targets), metadata_timeout_s)
        total = 0
        last_progress = time.monotonic()
        reached_at: float | None = None
        while stop is None or not stop.is_set():
            pending = {tp for tp, end in targets.items() if position.get(tp, 0) < end}
            # Before the group has assigned this member its partitions an empty batch says
            # nothing: the committed offsets may pass the high watermarks (Tansu's can lag
            # behind the last records), and not one of those records has been read yet.
            at_end = not pending and self.assignments > 0
            now = time.monotonic()
            if at_end:
                reached_at = now if reached_at is None else reached_at
                if now - reached_at > overrun_s:
                    break
            consumed = self.step(stop)
            if consumed:
                total += consumed
                last_progress = time.monotonic()
                for tp, offset in self.consumed_offsets.items():
                    position[tp] = max(position.get(tp, 0), offset)
                continue
            if at_end:
                break  # at the end offsets and nothing more to read
            if pending:
                # Nothing came: another group member may hold the partitions; ask the broker.
                for tp, offset in self._committed(sorted(pending), metadata_timeout_s).items():
                    position[tp] = max(position.get(tp, 0), offset)
            if time.monotonic() - last_progress > idle_timeout_s:
                if pending:
                    log.warning("ingest: %d partitions did not reach their end offsets within "
                                "%.0fs", len(pending), idle_timeout_s)
                else:
                    log.warning("ingest: the group assigned no partitions within %.0fs",
                                idle_timeout_s)
                break
        self.drain()
        return total

    def _end_offsets(self, timeout_s: float) -> dict[tuple[str, int], int]:
        """High watermark of every partition of every matching (non-internal) topic."""
        assert self.consumer is not None
        regex = re.compile(self.pattern)
        metadata = self.consumer.list_topics(timeout=timeout_s)
        ends: dict[tuple[str, int], int] = {}
        for name, topic in metadata.topics.items():
            if name.startswith("__") or not regex.match(name) or topic.error is not None:
                continue
            for partition in topic.partitions:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=timeout_s)
                if high > low:
                    ends[(name, partition)] = high
        return ends

    def _committed(self, tps: list[tuple[str, int]], timeout_s: float) -> dict[tuple[str, int], int]:
        """The group's committed offsets (or where a new group starts) of `tps`."""
        assert self.consumer is not None
        if not tps:
            return {}
        out: dict[tuple[str, int], int] = {}
        try:
            committed = self.consumer.committed([TopicPartition(t, p) for t, p in tps],
                                                timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TIMED_OUT:
                raise
            # The broker holds the request while the group joins (Tansu: about half the
            # session timeout). Unknown for now: reading goes on, the caller asks again.
            log.info("ingest: no committed offsets within %.0fs (the group is still "
                     "joining?); asking again later", timeout_s)
            return {}
        for tp in committed:
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
            elif (tp.topic, tp.partition) in self._latest_start:  # where this run started it
                out[(tp.topic, tp.partition)] = self._latest_start[(tp.topic, tp.partition)]
        return out


class _Unassigned:
    """Says so in the log when the group has given this member no partition for long: the
    members outnumber the partitions, or the group cannot form (a broker holding stale group
    state). First after `first_s`, then every `every_s` while it lasts."""

    def __init__(self, now: float, first_s: float = 120.0, every_s: float = 600.0) -> None:
        self.since: float | None = now
        self.next_s = first_s
        self.every_s = every_s

    def check(self, assigned: bool, now: float, group: str) -> bool:
        """Log when due; returns whether it logged."""
        if assigned:
            self.since = None
            return False
        if self.since is None:
            self.since, self.next_s = now, self.every_s / 5
            return False
        if now - self.since < self.next_s:
            return False
        log.warning("ingest: group %s has given this collector no partition for %.0fs: other "
                    "members hold them all, or the group cannot form (see the broker)", group,
                    now - self.since)
        self.next_s += self.every_s
        return True


def describe_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The consumer configuration with secrets masked, for logs."""
    return {
        k: ("***" if _SECRET_OPTION.search(k) else v)
        for k, v in config.items()
        if not callable(v)
    }


def _log_assign(_consumer: Any, partitions: list[TopicPartition]) -> None:
    log.info("ingest: assigned %d partitions: %s", len(partitions),
             ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions[:20]))


def _ignore(_error: Any) -> None:
    pass


def kafka_error_logger(every_s: float = 30.0) -> Callable[[Any], None]:
    """An `error_cb` that logs each distinct Kafka error at most once per `every_s` seconds
    (an unreachable broker otherwise repeats the same line many times a second)."""
    last: dict[Any, float] = {}

    def _log(error: Any) -> None:
        code = error.code() if hasattr(error, "code") else str(error)
        now = time.monotonic()
        if now - last.get(code, -every_s) >= every_s:
            last[code] = now
            log.warning("kafka: %s", error)

    return _log
