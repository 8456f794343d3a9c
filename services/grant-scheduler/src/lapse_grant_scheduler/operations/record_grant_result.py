"""An agent answered a grant command: the grant becomes ACTIVE with its expiry timer set,
or GRANT_FAILED with the agent's reason."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import enqueue_grant_fact
from lapse_grant_scheduler.models import Grant, GrantState
from lapse_grant_scheduler.operations.remind_expiring_grants import arm_reminder


async def record_grant_result(
    *,
    session: AsyncSession,
    result: events_pb2.AgentResult,
    topics: Topics,
    clock: Clock,
    expiry_notice: timedelta,
) -> bool:
    """Returns True when a new expiry timer was set (the timer should look again)."""
    if result.kind != common_pb2.COMMAND_KIND_GRANT:
        return False
    grant = await session.get(Grant, result.grant_id, with_for_update=True)
    if grant is None or grant.status != GrantState.GRANTING or result.epoch != grant.epoch:
        # Unknown grant, a duplicate answer, or an answer to a superseded command.
        return False
    now = clock.now()
    if result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED:
        grant.status = GrantState.ACTIVE
        grant.granted_at = now
        # The lifetime starts when access exists in the target, not when it was asked for.
        grant.expires_at = now + timedelta(seconds=grant.duration_seconds)
        arm_reminder(grant, now=now, notice=expiry_notice)
        grant.detail = result.detail
        enqueue_grant_fact(
            session,
            grant=grant,
            status=common_pb2.GRANT_STATUS_ACTIVE,
            reason=common_pb2.REASON_AGENT,
            actor=f"agent:{result.agent_id}",
            detail=result.detail or "granted in target",
            topics=topics,
            clock=clock,
        )
        return True
    grant.status = GrantState.GRANT_FAILED
    grant.detail = result.detail
    outcome = events_pb2.ResultOutcome.Name(result.outcome).removeprefix("RESULT_OUTCOME_")
    enqueue_grant_fact(
        session,
        grant=grant,
        status=common_pb2.GRANT_STATUS_GRANT_FAILED,
        reason=common_pb2.REASON_AGENT,
        actor=f"agent:{result.agent_id}",
        detail=f"{outcome}: {result.detail}",
        topics=topics,
        clock=clock,
    )
    return False
