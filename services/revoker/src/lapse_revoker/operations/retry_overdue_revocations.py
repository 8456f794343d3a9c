"""Re-send revocations whose ack deadline passed or whose backoff ended, dead-letter those
out of attempts, and fill free in-flight slots from the queue. Agent by agent, with a cap
per agent per pass, so one dead agent's backlog never delays another agent's work."""

from __future__ import annotations

from lapse_common.db import dialect_of
from lapse_common.telemetry import continued_trace
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord
from lapse_revoker.operations.fail_revoke_attempt import fail_revoke_attempt
from lapse_revoker.revoke_commands import dispatch, promote_queued
from lapse_revoker.revoker_context import RevokerContext


def _overdue(now: object) -> ColumnElement[bool]:
    return or_(
        and_(Revocation.state == RevocationState.AWAITING_ACK, Revocation.deadline_at <= now),
        and_(Revocation.state == RevocationState.BACKING_OFF, Revocation.next_attempt_at <= now),
    )


async def retry_overdue_revocations(
    *, session: AsyncSession, ctx: RevokerContext, per_agent: int = 50
) -> int:
    now = ctx.clock.now()
    agents = (
        (
            await session.execute(
                select(Revocation.agent_id)
                .where(or_(_overdue(now), Revocation.state == RevocationState.QUEUED))
                .distinct()
            )
        )
        .scalars()
        .all()
    )
    handled = 0
    for agent_id in agents:
        query = (
            select(Revocation)
            .where(Revocation.agent_id == agent_id, _overdue(now))
            .order_by(Revocation.deadline_at, Revocation.next_attempt_at)
            .limit(per_agent)
        )
        if dialect_of(session) == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for revocation in (await session.execute(query)).scalars().all():
            # Work done here joins the trace of the revoke request that started it.
            with continued_trace(revocation.trace_context):
                handled += 1
                if revocation.state == RevocationState.AWAITING_ACK:
                    # The agent never answered this attempt in time.
                    error = (
                        f"no ack from agent {revocation.agent_id} within "
                        f"{ctx.policy.ack_deadline.total_seconds():g}s"
                    )
                    attempt = await session.get(RevokeAttemptRecord, revocation.command_id)
                    if attempt is not None and attempt.finished_at is None:
                        attempt.finished_at = now
                        attempt.error = error
                    # Like any failure, never permanent: the agent may just be slow or down.
                    await fail_revoke_attempt(
                        session=session,
                        revocation=revocation,
                        error=error,
                        permanent=False,
                        ctx=ctx,
                    )
                else:
                    await dispatch(session, revocation=revocation, ctx=ctx)
        handled += await promote_queued(session, agent_id=agent_id, ctx=ctx)
    return handled
