"""`out_of_order` anomalies: causal (per flow), sequence and time (per group and subject).

- causal: a consumer group processed an effect before it processed the cause (CONSUMER span
  start times of that group), or the effect reached the bus before its cause (across
  partitions by more than the skew: record timestamps are the producers' clocks);
- sequence: a group processed a lower ce_sequence after a higher one of the same
  (source, subject);
- time: a group processed an older ce_time after a newer one of the same subject, by more than
  the skew.
Each anomaly names the event that arrived late (for causal: the cause) and carries, in
`extra`, the expected and the observed order with both events' times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..reconstruct.flows import Dag, Flow
from ..reconstruct.order import Processed, processing_order, reached_bus_before
from ._describe import label, record_of
from .anomaly import Anomaly

KIND = "out_of_order"


def detect(flow: Flow, dag: Dag, skew_s: float = 0.0) -> list[Anomaly]:
    """Causal out-of-order within one flow, by processing order and by bus order (record
    timestamps of different partitions compared with a tolerance of `skew_s`)."""
    found: list[Anomaly] = []
    nodes = dag.nodes
    skew_ms = skew_s * 1000.0
    if not dag.cause:
        return found
    # only groups that processed at least two events of this flow can invert two of them
    by_group = sorted((g, started) for g, started in processing_order(flow).items()
                      if len(started) > 1)
    for effect_id, cause_id in dag.cause.items():
        cause, effect = nodes[cause_id], nodes[effect_id]
        for group, started in by_group:
            t_cause, t_effect = started.get(cause_id), started.get(effect_id)
            if t_cause is None or t_effect is None or t_effect >= t_cause:
                continue
            found.append(Anomaly(
                kind=KIND, subkind="causal", key=f"causal:{group}:{cause_id}:{effect_id}",
                detail=f"group {group} processed {label(effect)} before its cause {label(cause)}",
                correlation_id=flow.flow_id, event_id=cause_id, subject=cause.subject,
                service=_service_of(flow, group), group=group,
                extra={"order": "processing", "type": cause.type,
                       "expected": [dict(record_of(cause), processed_at_us=t_cause),
                                    dict(record_of(effect), processed_at_us=t_effect)],
                       "observed": [dict(record_of(effect), processed_at_us=t_effect),
                                    dict(record_of(cause), processed_at_us=t_cause)]}))
        if reached_bus_before(effect, cause, skew_ms):
            found.append(Anomaly(
                kind=KIND, subkind="causal", key=f"causal:bus:{cause_id}:{effect_id}",
                detail=f"{label(effect)} reached the bus before its cause {label(cause)}",
                correlation_id=flow.flow_id, event_id=cause_id, subject=cause.subject,
                service=cause.source,
                extra={"order": "bus", "type": cause.type,
                       "expected": [record_of(cause), record_of(effect)],
                       "observed": [record_of(effect), record_of(cause)]}))
    return found


def _service_of(flow: Flow, group: str) -> str | None:
    for s in flow.spans:
        if s.group == group and s.service:
            return s.service
    return None


def detect_processing(rows: Iterable[Processed], skew_s: float) -> Iterator[Anomaly]:
    """Sequence and time out-of-order over processings sorted by group, subject, start time."""
    skew_ms = skew_s * 1000.0
    current: tuple[str, str] | None = None
    max_seq: dict[str | None, Processed] = {}
    max_time: Processed | None = None
    done: set[str] = set()
    for p in rows:
        if (p.group, p.subject) != current:
            current = (p.group, p.subject)
            max_seq, max_time, done = {}, None, set()
        if p.event_id in done:  # a redelivery is a duplicate, not an ordering problem
            continue
        done.add(p.event_id)
        if p.sequence is not None:
            top = max_seq.get(p.source)
            if top is not None and p.sequence < top.sequence:  # type: ignore[operator]
                yield _late(p, top, "sequence",
                            f"group {p.group} processed {p.type} {p.event_id} (sequence "
                            f"{p.sequence}) after {top.type} {top.event_id} (sequence "
                            f"{top.sequence}) of {p.source}/{p.subject}")
            if top is None or p.sequence > top.sequence:  # type: ignore[operator]
                max_seq[p.source] = p
        if p.time_ms is not None:
            if max_time is not None and max_time.time_ms - p.time_ms > skew_ms:  # type: ignore[operator]
                yield _late(p, max_time, "time",
                            f"group {p.group} processed {p.type} {p.event_id} (time {p.time}) "
                            f"after {max_time.type} {max_time.event_id} (time {max_time.time}) "
                            f"of subject {p.subject}")
            if max_time is None or p.time_ms > max_time.time_ms:  # type: ignore[operator]
                max_time = p


def _late(late: Processed, earlier: Processed, subkind: str, detail: str) -> Anomaly:
    return Anomaly(
        kind=KIND, subkind=subkind, key=f"{subkind}:{late.group}:{late.event_id}",
        detail=detail, correlation_id=late.flow_id, event_id=late.event_id,
        subject=late.subject, service=late.service, group=late.group,
        extra={"order": "processing", "type": late.type,
               "expected": [_processed(late), _processed(earlier)],
               "observed": [_processed(earlier), _processed(late)]})


def _processed(p: Processed) -> dict[str, Any]:
    return {"event_id": p.event_id, "type": p.type, "source": p.source,
            "sequence": p.sequence, "time": p.time, "time_ms": p.time_ms,
            "broker_ts_ms": p.broker_ts_ms, "topic": p.topic, "partition": p.partition,
            "offset": p.offset, "processed_at_us": p.start_us, "correlation_id": p.flow_id}
