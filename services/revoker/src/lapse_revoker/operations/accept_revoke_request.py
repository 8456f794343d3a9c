"""A revoke request arrived (expiry, user, admin...): start revoking at the agent."""

from __future__ import annotations

from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation, RevocationState
from lapse_revoker.revocation_steps import RevokerContext, enqueue_grant_fact, send_attempt


async def accept_revoke_request(
    *, session: AsyncSession, requested: events_pb2.RevokeRequested, ctx: RevokerContext
) -> None:
    revocation = await session.get(Revocation, requested.grant_id, with_for_update=True)
    if revocation is not None:
        if requested.epoch <= revocation.epoch or revocation.state == RevocationState.CONFIRMED:
            # Already revoking (or revoked) this grant at this epoch or a newer one.
            return
        revocation.epoch = requested.epoch
        revocation.attempt = 0
    else:
        revocation = Revocation(
            grant_id=requested.grant_id,
            request_id=requested.request_id,
            requester=requested.requester,
            integration_id=requested.spec.integration_id,
            agent_id=requested.spec.agent_id,
            resource=requested.spec.resource,
            permission=requested.spec.permission,
            principal=requested.spec.principal,
            epoch=requested.epoch,
            reason=requested.reason,
            actor=requested.actor,
            state=RevocationState.AWAITING_ACK,
            attempt=0,
            due_at=as_utc(requested.due_at.ToDatetime())
            if requested.HasField("due_at")
            else ctx.clock.now(),
        )
        session.add(revocation)
    send_attempt(session, revocation=revocation, ctx=ctx)
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKING,
        detail=f"revoke command sent to agent {revocation.agent_id}",
        ctx=ctx,
    )
