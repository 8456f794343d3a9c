"""The durable expiry timer: wakes at the earliest due grant or expiry reminder, so lateness
is the time to claim a row, not a poll period. The timers themselves live in the DB; a
restarted scheduler revokes (and reminds) everything that fell due while it was down on its
first pass."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_grant_scheduler.due_grants import next_due
from lapse_grant_scheduler.operations.give_up_unanswered_grants import (
    give_up_unanswered_grants,
)
from lapse_grant_scheduler.operations.remind_expiring_grants import (
    send_due_reminders,
)
from lapse_grant_scheduler.operations.request_due_revocations import (
    request_due_revocations,
)

logger = logging.getLogger(__name__)


class ExpiryTimer:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        wake_relay: Callable[[], None],
        topics: Topics,
        clock: Clock,
        max_sleep: float,
        batch_size: int,
        grant_ack_deadline: timedelta = timedelta(minutes=10),
    ) -> None:
        self._sessions = sessions
        self._wake_relay = wake_relay
        self._topics = topics
        self._clock = clock
        self._max_sleep = max_sleep
        self._batch_size = batch_size
        self._grant_ack_deadline = grant_ack_deadline
        self._changed = asyncio.Event()

    def timers_changed(self) -> None:
        """A grant became ACTIVE or its expiry moved here: its expiry or reminder may be
        earlier than the one slept for."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            try:
                sleep_for = await self.tick()
            except Exception:
                logger.exception("expiry timer pass failed; retrying")
                sleep_for = 1.0
            if sleep_for <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=sleep_for)
            self._changed.clear()

    async def tick(self) -> float:
        """Claim what is due; return how long to sleep before the next expiry or reminder."""
        # Revocations first and in their own transaction: a failing reminder must never hold
        # back a revocation, and a grant that is already due is revoked, not reminded.
        async with self._sessions() as session, session.begin():
            revoked = await request_due_revocations(
                session=session, topics=self._topics, clock=self._clock, batch_size=self._batch_size
            )
        if revoked:
            logger.info("requested revocation of %d expired grant(s)", revoked)
        async with self._sessions() as session, session.begin():
            reminded = await send_due_reminders(
                session=session, topics=self._topics, clock=self._clock, batch_size=self._batch_size
            )
        if reminded:
            logger.info("sent %d expiry reminder(s)", reminded)
        # Checked every pass (the sleep is at most max_sleep): a deadline late by a second
        # or two only delays when Lapse admits it does not know.
        async with self._sessions() as session, session.begin():
            gave_up = await give_up_unanswered_grants(
                session=session,
                deadline=self._grant_ack_deadline,
                topics=self._topics,
                clock=self._clock,
                batch_size=self._batch_size,
            )
        if gave_up:
            logger.warning("gave up on %d grant command(s) no agent answered in time", gave_up)
        if revoked or reminded or gave_up:
            self._wake_relay()
        if max(revoked, reminded) >= self._batch_size:
            return 0.0
        async with self._sessions() as session:
            upcoming = await next_due(session)
        if upcoming is None:
            return self._max_sleep
        wait = (upcoming - self._clock.now()).total_seconds()
        return max(0.0, min(self._max_sleep, wait))
