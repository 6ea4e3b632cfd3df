"""How much of each batch the writer process decodes.

The ingest process consumes, decodes and hands rows over; the writer process stores them
(writer.py). On SQLite the two do not cost the same (measured: about 64 against 35 µs of
CPU per record), so with all the decoding on one side the other core idles part of the
time. A batch can leave its last records undecoded for the writer, and `DecodeShare`
moves that part towards where both processes spend the same CPU: after each batch
stored, it compares the ingest's CPU since the batch before with what the writer reported
for it, and moves the share one step off the busier side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DecodeShare:
    """The part (0 to `high`) of each batch's records the writer decodes."""

    share: float = 0.25
    step: float = 0.025
    high: float = 0.75
    tolerance: float = 0.05
    """Relative CPU difference under which the share stays where it is."""

    def deferred(self, records: int) -> int:
        """How many of a batch of `records` to leave undecoded."""
        return int(records * self.share)

    def update(self, ingest_cpu_s: float, writer_cpu_s: float | None) -> float:
        """Step the share after a batch on which the ingest process spent `ingest_cpu_s`
        and the writer `writer_cpu_s` (None: a writer in this process, nothing moves).
        Returns the new share."""
        if writer_cpu_s is None or ingest_cpu_s < 0 or writer_cpu_s < 0:
            return self.share
        total = ingest_cpu_s + writer_cpu_s
        if total <= 0:
            return self.share
        gap = (ingest_cpu_s - writer_cpu_s) / total
        if gap > self.tolerance:
            self.share = min(self.high, self.share + self.step)
        elif gap < -self.tolerance:
            self.share = max(0.0, self.share - self.step)
        return self.share
