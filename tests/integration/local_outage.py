"""Taking the local Kafka or PostgreSQL (the ones deploy/local runs) down for a while during
a test, with the repo's own scripts, and always bringing it back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.infrastructure import REPO


@dataclass
class Outage:
    stopped_at: float = 0.0
    back_at: float = 0.0

    @property
    def lasted(self) -> float:
        return self.back_at - self.stopped_at


async def _script(name: str, action: str, *, check: bool) -> None:
    await asyncio.to_thread(
        subprocess.run,
        [str(REPO / "deploy" / "local" / name), action],
        check=check,
        capture_output=True,
        timeout=120,
    )


@asynccontextmanager
async def outage(script: str, *, seconds: float) -> AsyncIterator[Outage]:
    """Stop the service with `script` (kafka.sh, postgres.sh), keep it down `seconds`, start
    it again, then run the body; it is started again whatever the body does."""
    window = Outage()
    try:
        await _script(script, "stop", check=True)
        window.stopped_at = time.monotonic()
        await asyncio.sleep(seconds)
        await _script(script, "start", check=True)
        window.back_at = time.monotonic()
        yield window
    finally:
        await _script(script, "start", check=False)
