"""A revoke request arrived (expiry, user, admin...): start revoking at the agent."""

from __future__ import annotations

from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.telemetry import current_trace_context
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.grant_facts import enqueue_grant_fact
from lapse_revoker.models import Revocation, RevocationState
from lapse_revoker.revoke_commands import dispatch
from lapse_revoker.revoker_context import RevokerContext


async def accept_revoke_request(
    *, session: AsyncSession, requested: events_pb2.RevokeRequested, ctx: RevokerContext
) -> None:
    revocation = await session.get(Revocation, requested.grant_id, with_for_update=True)
    if revocation is not None:
        if not revocation.is_final and requested.end_sessions:
            # Sticky: a later request (panic, offboarding) asking to end sessions applies
            # to every attempt still to come, even when its epoch adds nothing else.
            revocation.end_sessions = True
        if requested.epoch <= revocation.epoch or revocation.is_final:
            # Already revoking (or done with) this grant at this epoch or a newer one.
            return
        revocation.take_over(epoch=requested.epoch)
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
            end_sessions=requested.end_sessions,
            state=RevocationState.QUEUED,
            attempt=0,
            due_at=as_utc(requested.due_at.ToDatetime())
            if requested.HasField("due_at")
            else ctx.clock.now(),
        )
        session.add(revocation)
    revocation.trace_context = current_trace_context()
    if requested.covered_by_grant_id:
        # Overlapping grants must not cut each other off: this grant's claim ends, the
        # access stays for the covering grant, whose own end will remove it.
        revocation.release(now=ctx.clock.now())
        until = as_utc(requested.covered_until.ToDatetime()).isoformat()
        enqueue_grant_fact(
            session,
            revocation=revocation,
            status=common_pb2.GRANT_STATUS_REVOKED,
            detail=(
                f"ended; the access stays in the target for overlapping grant "
                f"{requested.covered_by_grant_id} (until {until}), which removes it"
            ),
            ctx=ctx,
        )
        return
    sent = await dispatch(session, revocation=revocation, ctx=ctx)
    detail = (
        f"revoke command sent to agent {revocation.agent_id}"
        if sent
        else f"queued: agent {revocation.agent_id} has "
        f"{ctx.max_in_flight_per_agent} revocations in flight"
    )
    if revocation.end_sessions:
        detail += f"; {revocation.principal}'s open sessions will be ended too"
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKING,
        detail=detail,
        ctx=ctx,
    )
