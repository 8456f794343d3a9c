"""The scheduler's two durable timers on ACTIVE grants (expires_at, remind_at): claiming the
rows that are due, and when the next one falls due."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lapse_common.clock import as_utc
from lapse_common.db import dialect_of
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from lapse_grant_scheduler.models import Grant, GrantState


async def claim_due(
    session: AsyncSession,
    *,
    timer: InstrumentedAttribute[datetime | None],
    now: datetime,
    batch_size: int,
) -> Sequence[Grant]:
    """ACTIVE grants whose `timer` has passed, earliest first."""
    query = (
        select(Grant)
        .where(Grant.status == GrantState.ACTIVE, timer <= now)
        .order_by(timer)
        .limit(batch_size)
    )
    if dialect_of(session) == "postgresql":
        # Replicas share due grants without two of them claiming the same one.
        query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).scalars().all()


async def next_due(session: AsyncSession) -> datetime | None:
    """The earliest expiry or reminder of any ACTIVE grant, in one query."""
    row = (
        await session.execute(
            select(func.min(Grant.expires_at), func.min(Grant.remind_at)).where(
                Grant.status == GrantState.ACTIVE
            )
        )
    ).one()
    moments = [as_utc(moment) for moment in row if moment is not None]
    return min(moments, default=None)
