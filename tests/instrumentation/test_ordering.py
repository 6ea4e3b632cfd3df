"""OrderTracker: per-subject out-of-order detection, bounded and thread-safe."""

from __future__ import annotations

import threading

import pytest

from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.ordering import OrderTracker, OutOfOrder


def ev(
    id: str,
    *,
    subject: str | None = "ord_1",
    seq: int | None = None,
    time: str | None = None,
    source: str = "orders",
) -> Event:
    return Event(
        id=id, type="order.updated", source=source, subject=subject, sequence=seq, time=time
    )


def test_lower_sequence_is_late() -> None:
    """A lower sequence after a higher one of the same source and subject is out of order."""
    tracker = OrderTracker()
    assert tracker.observe(ev("a", seq=1)) is None
    assert tracker.observe(ev("b", seq=3)) is None
    assert tracker.observe(ev("c", seq=2)) == OutOfOrder("sequence", "b", previous_sequence=3)
    assert tracker.observe(ev("d", seq=4)) is None


def test_equal_sequence_is_not_late() -> None:
    """The same sequence again (a redelivery) is not an ordering problem."""
    tracker = OrderTracker()
    tracker.observe(ev("a", seq=2))
    assert tracker.observe(ev("a", seq=2)) is None


def test_sequence_per_source() -> None:
    """Sequences of different sources for one subject are independent."""
    tracker = OrderTracker()
    tracker.observe(ev("a", seq=10, source="orders"))
    assert tracker.observe(ev("b", seq=1, source="billing")) is None
    assert tracker.observe(ev("c", seq=9, source="orders")) == OutOfOrder(
        "sequence", "a", previous_sequence=10
    )


def test_subjects_are_independent() -> None:
    """Ordering is judged per subject only."""
    tracker = OrderTracker()
    tracker.observe(ev("a", subject="ord_1", seq=5))
    assert tracker.observe(ev("b", subject="ord_2", seq=1)) is None


def test_older_time_beyond_skew() -> None:
    """An older time counts only when it is older than the newest seen by more than the skew."""
    tracker = OrderTracker(skew=1.0)
    assert tracker.observe(ev("a", time="2026-01-01T10:00:05Z")) is None
    assert tracker.observe(ev("b", time="2026-01-01T10:00:04Z")) is None  # exactly the skew
    assert tracker.observe(ev("c", time="2026-01-01T11:00:03.9+01:00")) == OutOfOrder(
        "time", "a", previous_time="2026-01-01T10:00:05Z"
    )


def test_zero_skew_flags_any_older_time() -> None:
    """With the default skew of 0, any older time is out of order, an equal one is not."""
    tracker = OrderTracker()
    tracker.observe(ev("a", time="2026-01-01T10:00:05.500Z"))
    assert tracker.observe(ev("b", time="2026-01-01T10:00:05.500Z")) is None
    assert tracker.observe(ev("c", time="2026-01-01T10:00:05.499Z")) is not None


def test_sequence_reason_wins_over_time() -> None:
    """When both sequence and time are late, the sequence is the reason given."""
    tracker = OrderTracker()
    tracker.observe(ev("a", seq=2, time="2026-01-01T10:00:05Z"))
    late = tracker.observe(ev("b", seq=1, time="2026-01-01T10:00:00Z"))
    assert late is not None and late.reason == "sequence"


def test_not_judged_without_subject_or_order_fields() -> None:
    """Events without subject, or without sequence and usable time, are not judged."""
    tracker = OrderTracker()
    tracker.observe(ev("a", subject=None, seq=5))
    assert tracker.observe(ev("b", subject=None, seq=1)) is None
    tracker.observe(ev("c", seq=None, time="yesterday"))
    assert tracker.observe(ev("d", seq=None, time=None)) is None
    assert len(tracker) == 0  # nothing to judge by: nothing remembered


def test_attributes() -> None:
    """The span-event attributes name the reason and what was processed before."""
    assert OutOfOrder("sequence", "b", previous_sequence=3).attributes() == {
        "choreoscope.out_of_order.reason": "sequence",
        "choreoscope.previous.event_id": "b",
        "choreoscope.previous.sequence": 3,
    }
    assert OutOfOrder("time", None, previous_time="t").attributes() == {
        "choreoscope.out_of_order.reason": "time",
        "choreoscope.previous.time": "t",
    }


def test_lru_bound() -> None:
    """At most max_subjects subjects are remembered; the least recently seen is forgotten first."""
    tracker = OrderTracker(max_subjects=2)
    tracker.observe(ev("a", subject="s1", seq=5))
    tracker.observe(ev("b", subject="s2", seq=5))
    tracker.observe(ev("c", subject="s1", seq=6))  # s1 is now the most recent
    tracker.observe(ev("d", subject="s3", seq=5))  # evicts s2
    assert len(tracker) == 2
    assert tracker.observe(ev("e", subject="s2", seq=1)) is None  # forgotten: starts afresh
    assert tracker.observe(ev("f", subject="s2", seq=0)) is not None
    assert tracker.observe(ev("g", subject="s1", seq=1)) is None  # evicted by s2 just now


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"skew": -0.5}, "expected skew >= 0 seconds, got -0.5"),
        ({"skew": "1"}, "expected skew >= 0 seconds, got '1'"),
        ({"max_subjects": 0}, "expected max_subjects >= 1, got 0"),
        ({"max_subjects": 1.5}, "expected max_subjects >= 1, got 1.5"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], message: str) -> None:
    """Bad settings are rejected at construction with 'expected X, got Y'."""
    with pytest.raises(ValueError, match=message):
        OrderTracker(**kwargs)  # type: ignore[arg-type]


def test_thread_safe() -> None:
    """Concurrent observers never corrupt the state: each subject ends at its highest sequence."""
    tracker = OrderTracker(max_subjects=100)

    def work(offset: int) -> None:
        for seq in range(offset, 4000, 4):
            tracker.observe(ev(f"e{seq}", subject=f"s{(seq // 4) % 40}", seq=seq))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tracker) == 40
    for n in range(40):
        highest = max(seq for seq in range(4000) if (seq // 4) % 40 == n)
        assert tracker.observe(ev("x", subject=f"s{n}", seq=highest)) is None
        assert tracker.observe(ev("y", subject=f"s{n}", seq=highest - 1)) == OutOfOrder(
            "sequence", f"e{highest}", previous_sequence=highest
        )


def test_lowercase_rfc3339_time() -> None:
    """Lowercase t and z (allowed by RFC 3339) are understood."""
    tracker = OrderTracker()
    tracker.observe(ev("a", time="2026-01-01t10:00:05z"))
    assert tracker.observe(ev("b", time="2026-01-01T10:00:04Z")) == OutOfOrder(
        "time", "a", previous_time="2026-01-01t10:00:05z"
    )


def test_leap_second_time() -> None:
    """A leap second `:60` is a time too: what follows it in the time line may not precede it."""
    tracker = OrderTracker()
    assert tracker.observe(ev("a", time="2016-12-31T23:59:60Z")) is None
    late = tracker.observe(ev("b", time="2016-12-31T23:59:59.5Z"))
    assert late == OutOfOrder("time", "a", previous_time="2016-12-31T23:59:60Z")
    assert tracker.observe(ev("c", time="2017-01-01T00:00:00.001Z")) is None
