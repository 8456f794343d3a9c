"""Read the audit log, filtered and in chain order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lapse_common.refusals import Refusal, Refused
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_audit.models import AuditEventRecord, AuditEventSubject

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def list_events(
    session: AsyncSession,
    *,
    request_id: str = "",
    grant_id: str = "",
    event_type: str = "",
    actor: str = "",
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    after_sequence: int = 0,
    limit: int = 0,
) -> Sequence[AuditEventRecord]:
    """Events matching every given filter, oldest first, after `after_sequence`.

    `actor`: events naming that person (requester, actor, approver, operator,
    principal); `occurred_after <= occurred_at < occurred_before`.
    Page through the log by passing the last sequence returned as the next
    `after_sequence`. A `limit` of 0 means the default; above the maximum it is capped.
    A query that cannot be answered as asked is Refused (INVALID), saying what to change.
    """
    if after_sequence < 0:
        raise Refused(Refusal.INVALID, f"after_sequence must be 0 or more, got {after_sequence}")
    if limit < 0:
        raise Refused(
            Refusal.INVALID, f"limit must be 0 (default {DEFAULT_LIMIT}) or more, got {limit}"
        )
    if occurred_after and occurred_before and occurred_after >= occurred_before:
        raise Refused(Refusal.INVALID, "occurred_after must be before occurred_before")
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
    if actor:
        query = query.where(
            AuditEventRecord.sequence.in_(
                select(AuditEventSubject.sequence).where(AuditEventSubject.subject == actor)
            )
        )
    if occurred_after:
        query = query.where(AuditEventRecord.occurred_at >= occurred_after)
    if occurred_before:
        query = query.where(AuditEventRecord.occurred_at < occurred_before)
    return (await session.scalars(query)).all()
