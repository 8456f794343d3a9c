"""Re-send revocations whose ack deadline passed or whose backoff ended; dead-letter
those out of attempts."""

from __future__ import annotations

from lapse_common.db import dialect_of
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord
from lapse_revoker.operations.dead_letter_revocation import dead_letter_revocation
from lapse_revoker.revocation_steps import RevokerContext, send_attempt


async def retry_overdue_revocations(
    *, session: AsyncSession, ctx: RevokerContext, batch_size: int = 200
) -> int:
    now = ctx.clock.now()
    query = (
        select(Revocation)
        .where(
            or_(
                and_(
                    Revocation.state == RevocationState.AWAITING_ACK,
                    Revocation.deadline_at <= now,
                ),
                and_(
                    Revocation.state == RevocationState.BACKING_OFF,
                    Revocation.next_attempt_at <= now,
                ),
            )
        )
        .limit(batch_size)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    overdue = (await session.execute(query)).scalars().all()
    for revocation in overdue:
        if revocation.state == RevocationState.AWAITING_ACK:
            # The agent never answered this attempt in time.
            revocation.last_error = (
                f"no ack from agent {revocation.agent_id} within "
                f"{ctx.policy.ack_deadline.total_seconds():g}s"
            )
            attempt = await session.get(RevokeAttemptRecord, revocation.command_id)
            if attempt is not None and attempt.finished_at is None:
                attempt.finished_at = now
                attempt.error = revocation.last_error
        if revocation.attempt >= ctx.policy.max_attempts:
            await dead_letter_revocation(session=session, revocation=revocation, ctx=ctx)
        else:
            send_attempt(session, revocation=revocation, ctx=ctx)
    return len(overdue)
