"""Taking the local Kafka or PostgreSQL (the ones deploy/local runs) down for a while during
a test, with the repo's own scripts, and always bringing it back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from tests.infrastructure import REPO
from tests.integration.waiting import run_watched

_NOT_YET = datetime.min.replace(tzinfo=UTC)


@dataclass
class Outage:
    stopped_at: float = 0.0
    back_at: float = 0.0
    # The same moments on the wall clock, to compare with expiries.
    stopped_at_wall: datetime = _NOT_YET
    back_at_wall: datetime = _NOT_YET

    @property
    def lasted(self) -> float:
        return self.back_at - self.stopped_at


async def _script(name: str, action: str, *, check: bool) -> None:
    finished = await asyncio.to_thread(
        run_watched,
        [str(REPO / "deploy" / "local" / name), action],
        # The scripts bound their own waits for readiness and print little meanwhile.
        stall=600,
    )
    if check and finished.returncode != 0:
        raise RuntimeError(
            f"{name} {action} exited {finished.returncode}:\n{finished.stdout}{finished.stderr}"
        )


@asynccontextmanager
async def outage(script: str, *, seconds: float) -> AsyncIterator[Outage]:
    """Stop the service with `script` (kafka.sh, postgres.sh), keep it down `seconds`, start
    it again, then run the body; it is started again whatever the body does."""
    window = Outage()
    try:
        await _script(script, "stop", check=True)
        window.stopped_at, window.stopped_at_wall = time.monotonic(), datetime.now(UTC)
        await asyncio.sleep(seconds)
        await _script(script, "start", check=True)
        window.back_at, window.back_at_wall = time.monotonic(), datetime.now(UTC)
        yield window
    finally:
        await _script(script, "start", check=False)
