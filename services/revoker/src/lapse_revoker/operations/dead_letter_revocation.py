"""Give up retrying: publish the self-contained dead letter and mark the grant stuck."""

from __future__ import annotations

from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord
from lapse_revoker.revocation_steps import RevokerContext, dead_letter_record, enqueue_grant_fact


async def dead_letter_revocation(
    *, session: AsyncSession, revocation: Revocation, ctx: RevokerContext
) -> None:
    revocation.state = RevocationState.DEAD_LETTERED
    revocation.deadline_at = None
    revocation.next_attempt_at = None
    attempts = list(
        (
            await session.execute(
                select(RevokeAttemptRecord).where(
                    RevokeAttemptRecord.grant_id == revocation.grant_id,
                    RevokeAttemptRecord.epoch == revocation.epoch,
                )
            )
        )
        .scalars()
        .all()
    )
    enqueue(
        session,
        topic=ctx.topics.revoking_dead_letter,
        key=revocation.grant_id,
        payload=dead_letter_record(revocation=revocation, attempts=attempts),
        producer="revoker",
        clock=ctx.clock,
        request_id=revocation.request_id,
        grant_id=revocation.grant_id,
    )
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKING,
        detail=(
            f"revocation stuck after {revocation.attempt} attempt(s): {revocation.last_error}; "
            "replay or cancel it with the stuck-revocation tooling"
        ),
        ctx=ctx,
        stuck=True,
    )
