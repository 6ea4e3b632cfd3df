"""Local out-of-order detection for one consumer: what a handler already saw, per subject.

Ordering is judged per subject (DESIGN.md section 2). An event arrives out of order when,
for its subject, the consumer already processed

- a higher `ce_sequence` from the same source (`sequence`), or
- a `ce_time` newer than the event's own by more than `skew` seconds (`time`).

Memory is bounded: at most `max_subjects` subjects are remembered, least recently seen
first forgotten. One `OrderTracker` may be shared by several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ._clock import epoch_us
from .event import Event

SEQUENCE = "sequence"
TIME = "time"


@dataclass(frozen=True, slots=True)
class OutOfOrder:
    """Why an event is late: the reason and what was processed before it."""

    reason: str
    """`sequence` or `time`."""
    previous_event_id: str | None
    previous_sequence: int | None = None
    previous_time: str | None = None

    def attributes(self) -> dict[str, str | int]:
        """Span-event attributes: the reason and what was seen before."""
        attrs: dict[str, str | int] = {"choreoscope.out_of_order.reason": self.reason}
        if self.previous_event_id is not None:
            attrs["choreoscope.previous.event_id"] = self.previous_event_id
        if self.previous_sequence is not None:
            attrs["choreoscope.previous.sequence"] = self.previous_sequence
        if self.previous_time is not None:
            attrs["choreoscope.previous.time"] = self.previous_time
        return attrs


class _Subject:
    """The newest time and, per source, the highest sequence seen for one subject."""

    __slots__ = ("sequences", "time", "time_id", "time_text")

    def __init__(self) -> None:
        self.sequences: dict[str | None, tuple[int, str | None]] = {}
        self.time: float | None = None
        self.time_text: str | None = None
        self.time_id: str | None = None


class OrderTracker:
    """Remembers, per subject, the highest sequence (per source) and newest time processed."""

    def __init__(self, *, skew: float = 0.0, max_subjects: int = 10_000) -> None:
        if isinstance(skew, bool) or not isinstance(skew, int | float) or skew < 0:
            raise ValueError(f"expected skew >= 0 seconds, got {skew!r}")
        if isinstance(max_subjects, bool) or not isinstance(max_subjects, int) or max_subjects < 1:
            raise ValueError(f"expected max_subjects >= 1, got {max_subjects!r}")
        self.skew = float(skew)
        self.max_subjects = max_subjects
        self._subjects: OrderedDict[str, _Subject] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._subjects)

    def observe(self, event: Event) -> OutOfOrder | None:
        """Record `event` as processed; say why it is out of order, or None when it is not.

        Events without a subject are not judged. A sequence check wins over a time check.
        """
        subject = event.subject
        if not subject:
            return None
        seq = event.sequence
        when = _epoch(event.time) if event.time else None
        if seq is None and when is None:
            return None
        with self._lock:
            state = self._subjects.get(subject)
            if state is None:
                state = self._subjects[subject] = _Subject()
                if len(self._subjects) > self.max_subjects:
                    self._subjects.popitem(last=False)
            else:
                self._subjects.move_to_end(subject)
            late: OutOfOrder | None = None
            if seq is not None:
                seen = state.sequences.get(event.source)
                if seen is None or seq > seen[0]:
                    state.sequences[event.source] = (seq, event.id)
                elif seq < seen[0]:
                    late = OutOfOrder(SEQUENCE, seen[1], previous_sequence=seen[0])
            if when is not None:
                if state.time is None or when > state.time:
                    state.time, state.time_text, state.time_id = when, event.time, event.id
                elif late is None and state.time - when > self.skew:
                    late = OutOfOrder(TIME, state.time_id, previous_time=state.time_text)
            return late


def _epoch(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time, or None when it has no usable form."""
    us = epoch_us(text)
    return None if us is None else us / 1e6
