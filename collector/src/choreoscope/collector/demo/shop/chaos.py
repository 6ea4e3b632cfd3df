"""Switchable, deterministic faults: each decision is a hash of the order id, so a run is repeatable."""

from __future__ import annotations

import hashlib

# fault -> probability per order, by chaos level
LEVELS: dict[str, dict[str, float]] = {
    "none": {},
    "mild": {
        "payment_fails": 0.12,
        "duplicate_publish": 0.04,
        "out_of_stock": 0.05,
        "swallow": 0.04,
        "shipping_fails": 0.04,
        "poison_outbox": 0.02,
        "slow_mail": 0.15,
    },
    "heavy": {
        "payment_fails": 0.25,
        "duplicate_publish": 0.10,
        "out_of_stock": 0.12,
        "swallow": 0.10,
        "shipping_fails": 0.10,
        "poison_outbox": 0.05,
        "slow_mail": 0.35,
    },
}
# seconds notification-service lags behind on an order hit by slow_mail
LAG_S = {"none": 0.0, "mild": 1.5, "heavy": 3.0}


class Chaos:
    def __init__(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"expected chaos level none|mild|heavy, got {level!r}")
        self.level = level
        self.lag_s = LAG_S[level]

    def hits(self, fault: str, subject: str | None) -> bool:
        """Whether `fault` strikes the order `subject` (always the same answer for one order)."""
        p = LEVELS[self.level].get(fault, 0.0)
        if p <= 0 or not subject:
            return False
        digest = hashlib.sha256(f"{fault}:{subject}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < p
