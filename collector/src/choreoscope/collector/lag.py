"""Consumer lag per group and topic partition, from the broker's admin API.

For every consumer group (or the given ones): the committed offsets
(`list_consumer_group_offsets`) against the partitions' end offsets (`list_offsets`, latest),
written to the store's `consumer_lag` table. Lag = end offset - committed offset, never below 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec
from sqlalchemy import delete

from .admin import admin_client
from .store import Store
from .store.schema import consumer_lag

log = logging.getLogger(__name__)


class LagMonitor:
    """Measures consumer lag through one AdminClient; `.poll_once()` stores it."""

    def __init__(self, store: Store, bootstrap: str, *, groups: Iterable[str] | None = None,
                 kafka_options: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> None:
        self.store = store
        self.groups = list(groups) if groups is not None else None
        self.timeout_s = timeout_s
        self.admin = admin_client(bootstrap, kafka_options)

    def measure(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """`consumer_lag` rows of every group's committed partitions."""
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        groups = self.groups if self.groups is not None else self._all_groups()
        committed: list[tuple[str, str, int, int]] = []
        for group in groups:
            futures = self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s)
            try:
                result = futures[group].result()
            except Exception as exc:  # noqa: BLE001 - one group never hides the others
                log.warning("lag: offsets of group %s unavailable: %s", group, exc)
                continue
            committed.extend((group, tp.topic, tp.partition, tp.offset)
                             for tp in result.topic_partitions or [] if tp.offset >= 0)
        ends = self._end_offsets({(t, p) for _g, t, p, _o in committed})
        rows = []
        for group, topic, partition, offset in committed:
            end = ends.get((topic, partition))
            rows.append({
                "group_name": group, "topic": topic, "partition": partition,
                "committed": offset, "end_offset": end,
                "lag": None if end is None else max(end - offset, 0),
                "measured_at_ms": now_ms,
            })
        return rows

    def poll_once(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Measure and store lag, replacing the previous rows of the measured groups."""
        rows = self.measure(now_ms)
        groups = {r["group_name"] for r in rows}
        with self.store.engine.begin() as conn:
            if groups:
                conn.execute(delete(consumer_lag).where(consumer_lag.c.group_name.in_(groups)))
            self.store.insert_ignore(conn, consumer_lag, rows)
        return rows

    def _all_groups(self) -> list[str]:
        result = self.admin.list_consumer_groups(request_timeout=self.timeout_s).result()
        return sorted(g.group_id for g in result.valid)

    def _end_offsets(self, tps: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        futures = self.admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in sorted(tps)},
            request_timeout=self.timeout_s)
        ends = {}
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = future.result().offset
            except Exception as exc:  # noqa: BLE001
                log.warning("lag: end offset of %s/%d unavailable: %s", tp.topic, tp.partition, exc)
        return ends
