"""Refuses a signed call seen before. A signature proves a call came from Slack or Teams, not
that it came only once: whoever captures one (a proxy log, a TLS-terminating load balancer)
could send it again while its timestamp is still inside the freshness window. So every proven
call is remembered until its timestamp leaves that window, after which the freshness check
refuses it anyway.

The memory is bounded. When it is full of calls still inside their window, new calls are
refused (503) rather than forgetting one that could then be replayed; only genuinely signed
calls are recorded, so filling it takes that many real calls within five minutes.

It lives in this process: with several replicas, a replay sent to another replica is not seen.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable


class Replayed(Exception):
    """This exact call was already accepted."""


class ReplayMemoryFull(Exception):
    """Too many calls inside the window to remember another one."""


class ReplayGuard:
    def __init__(self, *, max_entries: int, now: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("the replay memory needs room for at least one call")
        self._max_entries = max_entries
        self._now = now
        self._expiry_of: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry_of)

    def admit(self, key: str, *, remember_until: float) -> None:
        """Accept `key` once; raise Replayed for any later sighting before `remember_until`."""
        self._forget_expired()
        if key in self._expiry_of:
            raise Replayed(f"this call was already accepted (replay of {key[:24]}...)")
        if len(self._expiry_of) >= self._max_entries:
            raise ReplayMemoryFull(
                f"{self._max_entries} calls are remembered inside the replay window; "
                "try again in a moment"
            )
        self._expiry_of[key] = remember_until
        heapq.heappush(self._by_expiry, (remember_until, key))

    def _forget_expired(self) -> None:
        now = self._now()
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, key = heapq.heappop(self._by_expiry)
            self._expiry_of.pop(key, None)
