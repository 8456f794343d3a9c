"""Background loop: requests nobody decided within their flow's timeout expire."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_approval.operations.expire_overdue_approvals import expire_overdue_approvals

logger = logging.getLogger(__name__)


@dataclass
class ApprovalTimeouts:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    topics: Topics
    clock: Clock
    interval_seconds: float = 0.5

    async def run(self) -> None:
        while True:
            try:
                async with self.sessions() as session, session.begin():
                    expired = await expire_overdue_approvals(
                        session=session, topics=self.topics, clock=self.clock
                    )
                if expired:
                    logger.info("%d request(s) expired without a decision", expired)
                    self.relay.wake()
            except Exception:
                logger.exception("approval timeout pass failed; retrying")
            await asyncio.sleep(self.interval_seconds)
