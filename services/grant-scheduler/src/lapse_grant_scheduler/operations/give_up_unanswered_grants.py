"""A grant command the agent has not answered within the ack deadline: Lapse gives up on it
(GRANT_FAILED, saying so) instead of showing GRANTING for ever. Should the agent execute it
later after all, its result makes the scheduler revoke the access at once (late grant, in
record_grant_result)."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.db import dialect_of
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import enqueue_grant_fact
from lapse_grant_scheduler.models import Grant, GrantState


async def give_up_unanswered_grants(
    *,
    session: AsyncSession,
    deadline: timedelta,
    topics: Topics,
    clock: Clock,
    batch_size: int,
) -> int:
    now = clock.now()
    query = (
        select(Grant)
        .where(Grant.status == GrantState.GRANTING, Grant.created_at <= now - deadline)
        .order_by(Grant.created_at)
        .limit(batch_size)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    unanswered = (await session.execute(query)).scalars().all()
    for grant in unanswered:
        grant.status = GrantState.GRANT_FAILED
        grant.detail = (
            f"agent {grant.agent_id} did not answer the grant command within "
            f"{deadline.total_seconds():.0f}s; Lapse gave up on it, and revokes the access "
            "at once should the agent still execute it"
        )
        enqueue_grant_fact(
            session,
            grant=grant,
            status=common_pb2.GRANT_STATUS_GRANT_FAILED,
            reason=common_pb2.REASON_AGENT,
            actor="lapse-grant-scheduler",
            detail=grant.detail,
            topics=topics,
            clock=clock,
        )
    return len(unanswered)
