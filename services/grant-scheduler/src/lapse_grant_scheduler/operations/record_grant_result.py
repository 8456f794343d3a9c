"""An agent answered a grant command: the grant becomes ACTIVE with its expiry timer set,
or GRANT_FAILED with the agent's reason."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import enqueue_grant_fact, request_revocation
from lapse_grant_scheduler.models import Grant, GrantState
from lapse_grant_scheduler.operations.remind_expiring_grants import arm_reminder
from lapse_grant_scheduler.overlapping_grants import covering_grant


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
    grant = _the_grant_it_answers(
        result, await session.get(Grant, result.grant_id, with_for_update=True)
    )
    now = clock.now()
    if (
        grant.status == GrantState.GRANT_FAILED
        and result.epoch == grant.epoch
        and result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED
    ):
        await _revoke_late_grant(session, grant=grant, result=result, topics=topics, clock=clock)
        return False
    if grant.status != GrantState.GRANTING or result.epoch != grant.epoch:
        # A duplicate answer, or an answer to a command a revoke request superseded.
        return False
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


async def _revoke_late_grant(
    session: AsyncSession,
    *,
    grant: Grant,
    result: events_pb2.AgentResult,
    topics: Topics,
    clock: Clock,
) -> None:
    """Lapse had given up on this grant (no answer in time, or the agent said it failed),
    yet the agent says the access now exists: take it away at once, unless another active
    grant of the same access keeps it."""
    gave_up = grant.detail
    detail = (
        f"late grant: agent {result.agent_id} executed the grant command after Lapse had "
        f"given up on it ({gave_up}); revoking the access at once"
    )
    grant.detail = detail
    request_revocation(
        session,
        grant=grant,
        reason=common_pb2.REASON_LATE_GRANT,
        actor=f"agent:{result.agent_id}",
        due_at=clock.now(),
        topics=topics,
        clock=clock,
        covering=await covering_grant(session, grant=grant),
    )
    enqueue_grant_fact(
        session,
        grant=grant,
        status=common_pb2.GRANT_STATUS_REVOKING,
        reason=common_pb2.REASON_LATE_GRANT,
        actor=f"agent:{result.agent_id}",
        detail=detail,
        topics=topics,
        clock=clock,
    )


def _the_grant_it_answers(result: events_pb2.AgentResult, grant: Grant | None) -> Grant:
    """A grant result counts only as the answer to the grant command this scheduler sent:
    that command id, for that grant, from the agent it was sent to. Anything else (a made-up
    command id, another agent) is refused and quarantined, and changes nothing: a forged
    failure must not make Lapse forget a grant the agent may still execute."""
    if grant is None:
        raise RefusedMessage(
            f"grant result for grant {result.grant_id!r} answers no grant command the "
            "scheduler sent (no such grant)"
        )
    if result.command_id != grant.command_id:
        raise RefusedMessage(
            f"grant result for grant {result.grant_id!r} names command {result.command_id!r}, "
            f"but the grant command sent was {grant.command_id!r}"
        )
    if result.agent_id != grant.agent_id:
        raise RefusedMessage(
            f"grant result for grant {result.grant_id!r} comes from agent {result.agent_id!r}, "
            f"but its command was sent to agent {grant.agent_id!r}"
        )
    return grant
