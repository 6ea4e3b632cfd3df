"""DecodeShare: the part of each batch the writer process decodes, stepped towards equal CPU."""

from __future__ import annotations

import pytest

from choreoscope.collector.ingest.share import DecodeShare


def test_the_share_moves_towards_the_process_with_cpu_to_spare() -> None:
    """The ingest busier: the writer decodes more; the writer busier: less; one step at a
    time, and not at all within the tolerance."""
    share = DecodeShare(share=0.25, step=0.05, tolerance=0.05)
    assert share.update(ingest_cpu_s=0.30, writer_cpu_s=0.20) == pytest.approx(0.30)
    assert share.update(ingest_cpu_s=0.30, writer_cpu_s=0.20) == pytest.approx(0.35)
    assert share.update(ingest_cpu_s=0.10, writer_cpu_s=0.20) == pytest.approx(0.30)
    # (0.21 - 0.20) / 0.41 is 2.4%: close enough, the share stays.
    assert share.update(ingest_cpu_s=0.21, writer_cpu_s=0.20) == pytest.approx(0.30)
    assert share.update(ingest_cpu_s=0.20, writer_cpu_s=0.21) == pytest.approx(0.30)


def test_the_share_stays_within_its_bounds() -> None:
    share = DecodeShare(share=0.7, step=0.1, high=0.75)
    assert [share.update(1.0, 0.1) for _ in range(2)] == [0.75, 0.75]
    share = DecodeShare(share=0.1, step=0.1)
    assert [share.update(0.1, 1.0) for _ in range(2)] == [0.0, 0.0]


def test_no_measure_moves_nothing() -> None:
    """A writer in the ingest's own process reports no CPU of its own; an idle batch (no CPU
    either side) and a clock gone backwards say nothing either."""
    share = DecodeShare(share=0.25)
    assert [share.update(0.5, None), share.update(0.0, 0.0), share.update(-1.0, 0.2),
            share.update(0.2, -1.0)] == [0.25, 0.25, 0.25, 0.25]


def test_deferred_records_are_the_share_of_the_batch_rounded_down() -> None:
    assert [DecodeShare(share=s).deferred(n) for s, n in
            ((0.25, 5000), (0.25, 6), (0.0, 5000), (0.75, 1), (1.0, 3))] == [1250, 1, 0, 0, 3]
