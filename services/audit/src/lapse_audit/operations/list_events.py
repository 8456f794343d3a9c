"""Read the audit log, filtered and in chain order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_audit.models import AuditEventRecord

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


class InvalidQuery(ValueError):
    """The query cannot be answered as asked; the message says what to change."""


async def list_events(
    session: AsyncSession,
    *,
    request_id: str = "",
    grant_id: str = "",
    event_type: str = "",
    after_sequence: int = 0,
    limit: int = 0,
) -> Sequence[AuditEventRecord]:
    """Events matching every non-empty filter, oldest first, after `after_sequence`.

    Page through the log by passing the last sequence returned as the next
    `after_sequence`. A `limit` of 0 means the default; above the maximum it is capped.
    """
    if after_sequence < 0:
        raise InvalidQuery(f"after_sequence must be 0 or more, got {after_sequence}")
    if limit < 0:
        raise InvalidQuery(f"limit must be 0 (default {DEFAULT_LIMIT}) or more, got {limit}")
    query = (
        select(AuditEventRecord)
        .where(AuditEventRecord.sequence > after_sequence)
        .order_by(AuditEventRecord.sequence)
        .limit(min(limit or DEFAULT_LIMIT, MAX_LIMIT))
    )
    if request_id:
        query = query.where(AuditEventRecord.request_id == request_id)
    if grant_id:
        query = query.where(AuditEventRecord.grant_id == grant_id)
    if event_type:
        query = query.where(AuditEventRecord.type == event_type)
    return (await session.scalars(query)).all()
