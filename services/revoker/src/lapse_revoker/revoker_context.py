"""What every revoker use case is given: signing, topic names, the clock and its limits."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.clock import Clock
from lapse_common.command_signing import CommandSigner
from lapse_common.topics import Topics

from lapse_revoker.retry_policy import RetryPolicy


@dataclass(frozen=True)
class RevokerContext:
    signer: CommandSigner
    topics: Topics
    clock: Clock
    policy: RetryPolicy
    max_in_flight_per_agent: int = 100
