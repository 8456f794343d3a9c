"""Background loop that enforces ack deadlines and backoff."""

from __future__ import annotations

import asyncio
import logging

from lapse_common.messaging.outbox import OutboxRelay
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_revoker.operations.retry_overdue_revocations import retry_overdue_revocations
from lapse_revoker.revoker_context import RevokerContext

logger = logging.getLogger(__name__)


class RetryLoop:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        ctx: RevokerContext,
        scan_interval: float,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._ctx = ctx
        self._scan_interval = scan_interval

    async def run(self) -> None:
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    handled = await retry_overdue_revocations(session=session, ctx=self._ctx)
                if handled:
                    logger.info("re-sent or dead-lettered %d overdue revocation(s)", handled)
                    self._relay.wake()
                    continue
            except Exception:
                logger.exception("retry pass failed; trying again")
            await asyncio.sleep(self._scan_interval)
