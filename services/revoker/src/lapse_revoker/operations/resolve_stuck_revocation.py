"""Operator actions on a stuck (dead-lettered) revocation: replay it with a new epoch, or
mark it canceled, which never claims the access is gone."""

from __future__ import annotations

from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.grant_facts import enqueue_grant_fact
from lapse_revoker.models import Revocation, RevocationState
from lapse_revoker.revoke_commands import dispatch
from lapse_revoker.revoker_context import RevokerContext

CANCEL_WARNING = (
    "the access may still exist in the target: Lapse did not verify its removal; remove it by hand"
)


async def _stuck(session: AsyncSession, grant_id: str) -> Revocation:
    """The dead-lettered revocation of the grant; Refused when there is none."""
    revocation = await session.get(Revocation, grant_id, with_for_update=True)
    if revocation is None:
        raise Refused(Refusal.NOT_FOUND, f"no revocation for grant {grant_id!r}")
    if revocation.state != RevocationState.DEAD_LETTERED:
        raise Refused(
            Refusal.CONFLICT,
            f"revocation of {grant_id} is {revocation.state}, not stuck; "
            "only dead-lettered revocations can be replayed or canceled",
        )
    return revocation


def _announce(
    session: AsyncSession,
    *,
    revocation: Revocation,
    resolution: events_pb2.StuckRevocationResolved.Resolution.ValueType,
    operator: str,
    reason: str,
    ctx: RevokerContext,
) -> None:
    enqueue(
        session,
        topic=ctx.topics.revoking_dead_letter,
        key=revocation.grant_id,
        payload=events_pb2.StuckRevocationResolved(
            grant_id=revocation.grant_id,
            epoch=revocation.epoch,
            resolution=resolution,
            operator=operator,
            reason=reason,
        ),
        producer="revoker",
        clock=ctx.clock,
        request_id=revocation.request_id,
        grant_id=revocation.grant_id,
    )


async def replay_stuck_revocation(
    *, session: AsyncSession, grant_id: str, operator: str, reason: str, ctx: RevokerContext
) -> str:
    revocation = await _stuck(session, grant_id)
    revocation.replay(operator=operator, reason=reason)
    sent = await dispatch(session, revocation=revocation, ctx=ctx)
    _announce(
        session,
        revocation=revocation,
        resolution=events_pb2.StuckRevocationResolved.RESOLUTION_REPLAYED,
        operator=operator,
        reason=reason,
        ctx=ctx,
    )
    detail = f"replayed by {operator}" + (f": {reason}" if reason else "")
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKING,
        detail=detail + ("" if sent else " (queued behind other revocations)"),
        ctx=ctx,
        actor=operator,
    )
    return "replayed: revoke command sent" if sent else "replayed: queued for its agent"


async def cancel_stuck_revocation(
    *, session: AsyncSession, grant_id: str, operator: str, reason: str, ctx: RevokerContext
) -> str:
    revocation = await _stuck(session, grant_id)
    revocation.cancel(operator=operator, reason=reason)
    _announce(
        session,
        revocation=revocation,
        resolution=events_pb2.StuckRevocationResolved.RESOLUTION_CANCELED,
        operator=operator,
        reason=reason,
        ctx=ctx,
    )
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKE_CANCELED,
        detail=f"canceled by {operator}"
        + (f" ({reason})" if reason else "")
        + f"; WARNING: {CANCEL_WARNING}",
        ctx=ctx,
        actor=operator,
    )
    return f"canceled; WARNING: {CANCEL_WARNING}"
