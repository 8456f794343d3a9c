"""Inbox: the id of every event a consumer has handled, recorded in the same transaction
as the state change, so a redelivered event is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from lapse_common.db import Base, dialect_of


class InboxRecord(Base):
    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Indexed for housekeeping, which deletes ids by age.
    handled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


async def first_delivery(
    session: AsyncSession, *, consumer: str, event_id: str, now: datetime
) -> bool:
    """Record the event for this consumer; False if it was handled before."""
    values = {"consumer": consumer, "event_id": event_id, "handled_at": now}
    insert = postgres_insert if dialect_of(session) == "postgresql" else sqlite_insert
    statement = insert(InboxRecord).values(**values).on_conflict_do_nothing()
    result = await session.execute(statement)
    assert isinstance(result, CursorResult)
    return bool(result.rowcount == 1)


async def first_deliveries(
    session: AsyncSession, *, consumer: str, event_ids: Sequence[str], now: datetime
) -> set[str]:
    """Record a batch of events for this consumer in one statement; returns the ids that
    were not handled before (an id repeated in the batch counts once)."""
    unique = list(dict.fromkeys(event_ids))
    if not unique:
        return set()
    insert = postgres_insert if dialect_of(session) == "postgresql" else sqlite_insert
    statement = (
        insert(InboxRecord)
        .values([{"consumer": consumer, "event_id": e, "handled_at": now} for e in unique])
        .on_conflict_do_nothing()
        .returning(InboxRecord.event_id)
    )
    return set((await session.scalars(statement)).all())
