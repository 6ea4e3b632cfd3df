"""Topics deleted and created again under the same name.

Events are keyed by (topic, partition, offset), and a topic created again starts its offsets
at 0: its records would land on positions already stored and be skipped as re-reads. So when
partitions are assigned, the ingest asks the broker for each topic's id (KIP-516) and compares
it with the id stored last time (table `topic_ids`). A different id is a new topic under an old
name: the stored events of the old one are renamed to `NAME~OLD_ID` (kept, and shown under
that name), and the new one is read from its beginning, whatever offsets the group committed
for the old one.

Comparing and renaming are one transaction, conditional on the stored id, so of several
collectors sharing a store exactly one renames. Only an assignment triggers the check: a topic
deleted and created again between two metadata refreshes of a consumer that keeps its
partitions is not seen. (On the embedded broker, deleting a topic restarts the collector's
worker, see supervise.py, so the new topic always comes with a new assignment.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import TopicCollection
from sqlalchemy import select, update

from ..store import Store
from ..store.schema import events, topic_ids

log = logging.getLogger(__name__)

ARCHIVE_MARK = "~"  # never in a Kafka topic name ([a-zA-Z0-9._-])


def archived_name(topic: str, old_id: str) -> str:
    """Where the events of a replaced topic are kept (within the 255 characters of a topic)."""
    suffix = f"{ARCHIVE_MARK}{old_id}"
    return topic[: 255 - len(suffix)] + suffix


def record_topic_id(store: Store, topic: str, topic_id: str, now_ms: int) -> str | None:
    """Store `topic_id` as the id of `topic`. When another id was stored, rename the events of
    `topic` to `archived_name(topic, old id)` and return that name; None otherwise (first
    sight, same id, or another collector renamed first)."""
    with store.engine.begin() as conn:
        known = conn.execute(
            select(topic_ids.c.topic_id).where(topic_ids.c.topic == topic)).scalar_one_or_none()
        if known == topic_id:
            return None
        if known is None:
            store.insert_ignore(conn, topic_ids, [
                {"topic": topic, "topic_id": topic_id, "seen_at_ms": now_ms}])
            return None
        replaced = conn.execute(
            update(topic_ids)
            .where(topic_ids.c.topic == topic, topic_ids.c.topic_id == known)
            .values(topic_id=topic_id, seen_at_ms=now_ms)).rowcount
        if replaced != 1:
            return None  # another collector saw the new id first and renamed
        archived = archived_name(topic, known)
        conn.execute(update(events).where(events.c.topic == topic).values(topic=archived))
        return archived


class TopicGenerations:
    """Checks the topics of an assignment against the ids stored (`recreated`)."""

    def __init__(self, store: Store | None, admin_factory: Callable[[], Any],
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._admin_factory = admin_factory
        self._admin: Any = None
        self.timeout_s = timeout_s
        self.clock = clock

    def recreated(self, topics: Iterable[str]) -> set[str]:
        """The topics among `topics` created again since the store last saw them, their old
        events renamed. A broker that cannot say (no topic ids, unreachable) makes this
        return nothing and log why: ingest goes on as before."""
        names = sorted({t for t in topics if not t.startswith("__")})
        if not names or self.store is None:
            return set()
        ids = self._ids(names)
        now_ms = int(self.clock() * 1000)
        out = set()
        for topic, topic_id in ids.items():
            try:
                archived = record_topic_id(self.store, topic, topic_id, now_ms)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop ingest
                log.warning("ingest: could not check topic %s against the store: %s", topic, exc)
                continue
            if archived is not None:
                log.warning("ingest: topic %s was deleted and created again (id %s); the events "
                            "of the old topic are kept as %s, the new one is read from its start",
                            topic, topic_id, archived)
                out.add(topic)
        return out

    def _ids(self, names: list[str]) -> Mapping[str, str]:
        try:
            if self._admin is None:
                self._admin = self._admin_factory()
            futures = self._admin.describe_topics(TopicCollection(names),
                                                  request_timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.warning("ingest: topic ids unavailable (%s); a topic created again under an "
                        "old name is not detected", exc)
            return {}
        ids = {}
        failed: list[str] = []
        for name, future in futures.items():
            try:
                topic_id = future.result(self.timeout_s).topic_id
            except Exception as exc:  # noqa: BLE001 - unreachable, a topic deleted meanwhile
                failed.append(f"{name}: {exc}")
                continue
            if topic_id is not None and str(topic_id) not in ("", _ZERO_ID):
                ids[name] = str(topic_id)
        if failed:
            log.warning("ingest: no topic id for %d of %d topics (%s); a topic created again "
                        "under an old name is not detected", len(failed), len(names), failed[0])
        return ids


_ZERO_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # what a broker without topic ids answers
