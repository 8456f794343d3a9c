"""Sending revoke commands to agents, at most `max_in_flight_per_agent` awaiting an ack per
agent; the rest wait in the agent's queue, oldest first."""

from __future__ import annotations

from lapse_common.db import dialect_of
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.agent_commands import enqueue_agent_command
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.telemetry import continued_trace
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord
from lapse_revoker.revoker_context import RevokerContext


def send_attempt(session: AsyncSession, *, revocation: Revocation, ctx: RevokerContext) -> None:
    """Send the revocation's next attempt now and record it; the callers have checked that
    its agent has a free in-flight slot."""
    now = ctx.clock.now()
    with continued_trace(revocation.trace_context):
        command_id = enqueue_agent_command(
            session,
            signer=ctx.signer,
            topics=ctx.topics,
            kind=common_pb2.COMMAND_KIND_REVOKE,
            grant_id=revocation.grant_id,
            epoch=revocation.epoch,
            spec=grant_spec_of(revocation),
            request_id=revocation.request_id,
            producer="revoker",
            clock=ctx.clock,
            end_sessions=revocation.end_sessions,
        )
    revocation.send(command_id=command_id, deadline_at=now + ctx.policy.ack_deadline)
    session.add(
        RevokeAttemptRecord(
            command_id=revocation.command_id,
            grant_id=revocation.grant_id,
            attempt=revocation.attempt,
            epoch=revocation.epoch,
            sent_at=now,
        )
    )


async def in_flight(session: AsyncSession, *, agent_id: str) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Revocation)
        .where(
            Revocation.agent_id == agent_id,
            Revocation.state == RevocationState.AWAITING_ACK,
        )
    )
    return int(count or 0)


async def dispatch(session: AsyncSession, *, revocation: Revocation, ctx: RevokerContext) -> bool:
    """Send the next attempt if the agent has a free in-flight slot, else queue it.
    Returns True when a command went out."""
    if await in_flight(session, agent_id=revocation.agent_id) >= ctx.max_in_flight_per_agent:
        revocation.queue(now=ctx.clock.now())
        return False
    send_attempt(session, revocation=revocation, ctx=ctx)
    return True


async def promote_queued(session: AsyncSession, *, agent_id: str, ctx: RevokerContext) -> int:
    """Fill the agent's free in-flight slots with its oldest queued revocations."""
    await session.flush()
    free = ctx.max_in_flight_per_agent - await in_flight(session, agent_id=agent_id)
    if free <= 0:
        return 0
    query = (
        select(Revocation)
        .where(Revocation.agent_id == agent_id, Revocation.state == RevocationState.QUEUED)
        .order_by(Revocation.queued_at)
        .limit(free)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    queued = (await session.execute(query)).scalars().all()
    for revocation in queued:
        send_attempt(session, revocation=revocation, ctx=ctx)
    return len(queued)
