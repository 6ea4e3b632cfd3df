"""Coalesced wake-ups of the producer's network thread: the flag logic alone, then on the
real broker (bursts with tiny batches, sends from several threads, sends one at a time)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from opentelemetry.sdk.trace import TracerProvider

from choreoscope.instrumentation._wakeups import WakeupCoalescer, coalesce_wakeups
from choreoscope.instrumentation.producer import TracedProducer, instrument_producer

from .test_producer import read_back


class LoopingSender:
    """The shape of kafka-python's Sender: a `run` loop calling `run_once` through the
    instance, and a `wakeup` (here it records what reached it)."""

    def __init__(self) -> None:
        self.bytes_written = 0
        self.iterations = 0
        self.fail_next_wakeup = False
        self.running = False

    def run(self) -> None:
        while self.running:
            self.run_once()

    def run_once(self) -> None:
        self.iterations += 1

    def wakeup(self) -> None:
        if self.fail_next_wakeup:
            self.fail_next_wakeup = False
            raise OSError("socket pair closed")
        self.bytes_written += 1


class ProducerLike:
    def __init__(self, sender: Any) -> None:
        self._sender = sender


def test_a_wakeup_pending_since_the_last_iteration_covers_the_next_ones() -> None:
    sender = LoopingSender()
    coalescer = coalesce_wakeups(ProducerLike(sender))
    assert isinstance(coalescer, WakeupCoalescer)

    sender.wakeup()
    sender.wakeup()
    sender.wakeup()
    assert (sender.bytes_written, coalescer.written, coalescer.skipped) == (1, 1, 2)

    sender.run_once()  # an iteration began: it sees what was appended, later sends need a byte
    assert sender.iterations == 1
    sender.wakeup()
    assert (sender.bytes_written, coalescer.written, coalescer.skipped) == (2, 2, 2)


def test_a_wakeup_that_failed_to_write_is_not_counted_as_pending() -> None:
    sender = LoopingSender()
    coalescer = coalesce_wakeups(ProducerLike(sender))
    assert coalescer is not None
    sender.fail_next_wakeup = True
    with pytest.raises(OSError, match="socket pair closed"):
        sender.wakeup()
    assert coalescer.pending is False
    sender.wakeup()
    assert (sender.bytes_written, coalescer.written, coalescer.skipped) == (1, 1, 0)


def test_coalescing_twice_keeps_the_first_coalescer() -> None:
    producer = ProducerLike(LoopingSender())
    first = coalesce_wakeups(producer)
    assert first is not None
    assert coalesce_wakeups(producer) is first
    producer._sender.wakeup()
    assert producer._sender.bytes_written == 1


class SenderWithoutLoop:
    """A sender whose thread does not go through `run_once`: replacing it would not be seen."""

    def run(self) -> None:
        pass

    def run_once(self) -> None:
        pass

    def wakeup(self) -> None:
        pass


class SenderRefusingAttributes(LoopingSender):
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "wakeup":
            raise AttributeError("read-only")
        super().__setattr__(name, value)


@pytest.mark.parametrize("producer", [ProducerLike(SenderWithoutLoop()), ProducerLike(None),
                                      object(), ProducerLike(SenderRefusingAttributes())])
def test_a_producer_of_another_shape_is_left_as_it_is(producer: Any) -> None:
    sender = getattr(producer, "_sender", None)
    before = dict(vars(sender)) if sender is not None else None
    assert coalesce_wakeups(producer) is None
    if sender is not None:
        assert vars(sender) == before


# -- on the real broker ---------------------------------------------------------------------


@pytest.mark.broker
def test_instrument_producer_coalesces_unless_told_not_to(
    bootstrap: str, tracer_provider: TracerProvider
) -> None:
    on = KafkaProducer(bootstrap_servers=bootstrap)
    off = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        instrument_producer(on, service="orders", tracer_provider=tracer_provider)
        instrument_producer(off, service="orders", tracer_provider=tracer_provider,
                            coalesce_wakeups=False)
        assert isinstance(on._sender.wakeup.__self__, WakeupCoalescer)
        assert not isinstance(getattr(off._sender.wakeup, "__self__", None), WakeupCoalescer)
        assert "wakeup" not in vars(off._sender)
    finally:
        on.close(timeout=5)
        off.close(timeout=5)


@pytest.fixture
def tiny_batches(bootstrap: str, tracer_provider: TracerProvider) -> Iterator[TracedProducer]:
    """An instrumented producer with 1 KiB batches: about two enveloped records each, so
    batches queue up at once and kafka-python asks for a wake-up on nearly every send."""
    raw = KafkaProducer(bootstrap_servers=bootstrap, batch_size=1024)
    yield instrument_producer(raw, service="orders", tracer_provider=tracer_provider)
    raw.close(timeout=5)


@pytest.mark.broker
def test_a_burst_into_tiny_batches_skips_wakeups_and_delivers_every_record(
    bootstrap: str, topic: str, tiny_batches: TracedProducer
) -> None:
    coalescer = tiny_batches.wrapped._sender.wakeup.__self__
    futures = [tiny_batches.send(topic, {"n": n}, partition=0) for n in range(3000)]
    tiny_batches.flush(timeout=60)
    offsets = [f.get(timeout=1).offset for f in futures]
    assert offsets == list(range(offsets[0], offsets[0] + 3000))
    assert coalescer.skipped > 0
    assert coalescer.written + coalescer.skipped >= 1500  # asked for about once per batch
    assert [r.value for r in read_back(bootstrap, topic, 3000)] == [
        b'{"n":%d}' % n for n in range(3000)
    ]


@pytest.mark.broker
def test_sends_from_several_threads_all_arrive(
    bootstrap: str, topic: str, tiny_batches: TracedProducer
) -> None:
    futures: list[Any] = []
    lock = threading.Lock()

    def send(thread: int) -> None:
        mine = [tiny_batches.send(topic, {"thread": thread, "n": n}) for n in range(500)]
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for f in futures:
        f.get(timeout=30)
    assert len(futures) == 2000
    values = {r.value for r in read_back(bootstrap, topic, 2000)}
    assert values == {b'{"thread":%d,"n":%d}' % (t, n) for t in range(4) for n in range(500)}


@pytest.mark.broker
def test_a_lone_send_after_a_burst_is_not_held_back(
    topic: str, tiny_batches: TracedProducer
) -> None:
    # A skipped wake-up that nothing covered would leave the record waiting for the network
    # thread's next timeout (many seconds when idle); each lone send must be acknowledged
    # about as fast as the broker answers.
    for n in range(2000):
        tiny_batches.send(topic, {"burst": n})
    tiny_batches.flush(timeout=60)
    waits = []
    for n in range(20):
        time.sleep(0.05)  # the network thread goes back to waiting
        started = time.monotonic()
        tiny_batches.send(topic, {"lone": n, "id": uuid.uuid4().hex}).get(timeout=30)
        waits.append(time.monotonic() - started)
    assert max(waits) < 2.0, waits
