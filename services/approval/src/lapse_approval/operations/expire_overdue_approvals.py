"""Requests nobody decided in time become APPROVAL_EXPIRED."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.db import dialect_of
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import decide
from lapse_approval.models import ApprovalCase, CaseStatus


async def expire_overdue_approvals(
    *, session: AsyncSession, topics: Topics, clock: Clock, batch_size: int = 200
) -> int:
    query = (
        select(ApprovalCase)
        .where(ApprovalCase.status == CaseStatus.PENDING, ApprovalCase.expires_at <= clock.now())
        .limit(batch_size)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    overdue = (await session.execute(query)).scalars().all()
    for case in overdue:
        await decide(
            session,
            case=case,
            decision=common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED,
            reason=common_pb2.REASON_EXPIRED,
            decided_by="lapse-approval",
            detail=f"no decision within the approval timeout of flow {case.flow!r}",
            topics=topics,
            clock=clock,
        )
    return len(overdue)
