"""Work done after the HTTP answer: Slack wants an answer within 3 s and Teams within 5 s,
so posting to other channels and updating messages happen after it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundWork:
    def __init__(self) -> None:
        # Held here so a running task is never garbage-collected half-way.
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, Any], *, what: str) -> None:
        task = asyncio.create_task(work, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Let running work finish on shutdown; cancel what is still running at the end."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            logger.warning("%s still running at shutdown: canceled", task.get_name())
            task.cancel()
