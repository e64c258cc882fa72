"""How long a failed attempt waits before the next one."""

from __future__ import annotations

import random
from dataclasses import dataclass

from common.topology import pick_rung


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 5.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.1

    def backoff(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Exponential back-off after the given (1-based) attempt failed, with ± jitter."""
        raw = min(self.base_seconds * self.factor ** (failed_attempt - 1), self.max_seconds)
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, raw * (1.0 + spread))

    def rung(self, failed_attempt: int, rng: random.Random | None = None) -> int:
        """The delay queue the next attempt waits in."""
        return pick_rung(self.backoff(failed_attempt, rng))
