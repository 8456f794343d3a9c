"""How the revoker retries: the ack deadline of each attempt, how many attempts, and the
backoff between them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    ack_deadline: timedelta
    max_attempts: int
    backoff_initial: timedelta
    backoff_max: timedelta
    jitter_ratio: float

    def backoff(self, attempt: int) -> timedelta:
        """Exponential backoff after `attempt` failed, with jitter so that many
        revocations failing together do not retry in lockstep."""
        base = min(
            self.backoff_max.total_seconds(),
            self.backoff_initial.total_seconds() * (2 ** max(0, attempt - 1)),
        )
        return timedelta(seconds=base * (1 + random.uniform(0, self.jitter_ratio)))
