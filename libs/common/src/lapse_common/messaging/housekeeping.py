"""Housekeeping: outbox rows and inbox ids are deleted once they have served their purpose,
so both tables stay bounded however long a service runs.

A published outbox row is done with once Kafka has it; an inbox id only has to outlive every
redelivery Kafka could still make of its event (the periods and why: HousekeepingSettings).
Outbox rows set aside (refused by Kafka for good) are kept whatever their age: they are
evidence an operator must look at. So are rows not yet published.

Pruning stays off the hot path. Each DELETE takes at most `batch_size` rows, chosen by a
subquery on the primary key, and commits on its own, with a pause before the next. Nothing
else touches the rows it deletes (the relay reads only unpublished rows, consumers add new
ids), so on PostgreSQL no transaction of the service waits for it; on SQLite, which has one
writer, a transaction waits for one short batch at most.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import metrics
from sqlalchemy import Delete, delete, select, tuple_
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_common.clock import Clock
from lapse_common.db import dialect_of
from lapse_common.messaging.inbox import InboxRecord
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.settings import HousekeepingSettings

logger = logging.getLogger(__name__)

_pruned = metrics.get_meter("lapse.housekeeping").create_counter(
    "lapse.housekeeping.pruned",
    description="Outbox rows and inbox ids deleted once past their retention",
)


@dataclass(frozen=True)
class Pruned:
    """What one pass deleted, and in how many statements."""

    outbox_rows: int
    inbox_ids: int
    statements: int


class Housekeeping:
    """Every `interval_seconds`, deletes the outbox rows published and the inbox ids handled
    longer ago than their retention. Runs as a background task in each service."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: HousekeepingSettings,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._settings = settings

    async def run(self) -> None:
        while True:
            # The first pass waits an interval too: a service just (re)started has missed
            # revocations and events to catch up on first.
            await asyncio.sleep(self._settings.interval_seconds)
            try:
                await self.prune_once()
            except Exception:
                # The DB is down or busy: the rows will still be there on the next pass.
                logger.exception(
                    "housekeeping pass failed; trying again in %.0f s",
                    self._settings.interval_seconds,
                )

    async def prune_once(self) -> Pruned:
        """Delete everything due at this moment, batch by batch."""
        now = self._clock.now()
        limit = self._settings.batch_size
        outbox_before = now - timedelta(seconds=self._settings.outbox_retention_seconds)
        inbox_before = now - timedelta(seconds=self._settings.inbox_retention_seconds)
        outbox_rows, outbox_statements = await self._in_batches(
            lambda postgres: _published_outbox_rows(
                before=outbox_before, limit=limit, postgres=postgres
            )
        )
        inbox_ids, inbox_statements = await self._in_batches(
            lambda postgres: _handled_inbox_ids(before=inbox_before, limit=limit, postgres=postgres)
        )
        _pruned.add(outbox_rows, {"table": "outbox"})
        _pruned.add(inbox_ids, {"table": "inbox"})
        logger.debug(
            "housekeeping: %d outbox rows published before %s and %d inbox ids handled "
            "before %s deleted",
            outbox_rows,
            outbox_before.isoformat(),
            inbox_ids,
            inbox_before.isoformat(),
        )
        return Pruned(
            outbox_rows=outbox_rows,
            inbox_ids=inbox_ids,
            statements=outbox_statements + inbox_statements,
        )

    async def _in_batches(self, batch: Callable[[bool], Delete]) -> tuple[int, int]:
        """Run the batch's DELETE until it comes back short; returns (rows, statements)."""
        deleted = statements = 0
        while True:
            async with self._sessions() as session, session.begin():
                result = await session.execute(batch(dialect_of(session) == "postgresql"))
            assert isinstance(result, CursorResult)
            statements += 1
            deleted += result.rowcount
            if result.rowcount < self._settings.batch_size:
                return deleted, statements
            await asyncio.sleep(self._settings.batch_pause_seconds)


def _published_outbox_rows(*, before: datetime, limit: int, postgres: bool) -> Delete:
    batch = (
        select(OutboxMessage.id)
        .where(OutboxMessage.published_at < before, OutboxMessage.set_aside_at.is_(None))
        .order_by(OutboxMessage.published_at)
        .limit(limit)
    )
    if postgres:
        # Replicas of a service prune the same table: each takes rows no other has locked
        # rather than waiting for them.
        batch = batch.with_for_update(skip_locked=True)
    return (
        delete(OutboxMessage)
        .where(OutboxMessage.id.in_(batch))
        .execution_options(synchronize_session=False)
    )


def _handled_inbox_ids(*, before: datetime, limit: int, postgres: bool) -> Delete:
    batch = (
        select(InboxRecord.consumer, InboxRecord.event_id)
        .where(InboxRecord.handled_at < before)
        .order_by(InboxRecord.handled_at)
        .limit(limit)
    )
    if postgres:
        batch = batch.with_for_update(skip_locked=True)
    return (
        delete(InboxRecord)
        .where(tuple_(InboxRecord.consumer, InboxRecord.event_id).in_(batch))
        .execution_options(synchronize_session=False)
    )
