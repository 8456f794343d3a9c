"""A grant is being revoked for another reason than its expiry (the requester, an admin):
its expiry timer must not fire a second revocation."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.models import Grant, GrantState


async def stop_timer_on_revoke(
    *, session: AsyncSession, requested: events_pb2.RevokeRequested, clock: Clock
) -> None:
    if requested.reason == common_pb2.REASON_EXPIRED:
        return  # our own expiry: already marked when it was claimed
    grant = await session.get(Grant, requested.grant_id, with_for_update=True)
    if grant is None or grant.status != GrantState.ACTIVE or requested.epoch <= grant.epoch:
        return
    grant.status = GrantState.REVOKE_REQUESTED
    grant.epoch = requested.epoch
    grant.revoke_requested_at = clock.now()
