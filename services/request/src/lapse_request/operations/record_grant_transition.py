"""Keep the Activity read model in step with the grant lifecycle facts."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import GrantActivity, GrantTransition

# Facts for one grant come from two producers (scheduler, revoker); a late fact must not
# move the status backwards, so each status has a rank and only forward moves apply.
_RANK: dict[int, int] = {
    common_pb2.GRANT_STATUS_GRANTING: 1,
    common_pb2.GRANT_STATUS_ACTIVE: 2,
    common_pb2.GRANT_STATUS_GRANT_FAILED: 5,
    common_pb2.GRANT_STATUS_REVOKING: 3,
    common_pb2.GRANT_STATUS_REVOKED: 5,
    common_pb2.GRANT_STATUS_REVOKE_CANCELED: 4,
}


async def record_grant_transition(
    *, session: AsyncSession, changed: events_pb2.GrantStatusChanged, clock: Clock
) -> None:
    now = clock.now()
    row = await session.get(GrantActivity, changed.grant_id, with_for_update=True)
    if row is None:
        row = GrantActivity(
            grant_id=changed.grant_id,
            request_id=changed.request_id,
            requester=changed.requester,
            integration_id=changed.spec.integration_id,
            agent_id=changed.spec.agent_id,
            resource=changed.spec.resource,
            permission=changed.spec.permission,
            principal=changed.spec.principal,
            status=changed.status,
            stuck=changed.stuck,
            epoch=changed.epoch,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
    elif (
        _RANK.get(changed.status, 0) > _RANK.get(row.status, 0)
        or (changed.status == row.status and changed.epoch >= row.epoch)
        # A late grant: the agent executed a command Lapse had given up on, and the
        # scheduler revokes it under a new epoch. GRANT_FAILED is then no longer the truth.
        or (row.status == common_pb2.GRANT_STATUS_GRANT_FAILED and changed.epoch > row.epoch)
    ):
        row.status = changed.status
        row.stuck = changed.stuck
        row.epoch = max(row.epoch, changed.epoch)
        row.updated_at = now
    if changed.HasField("granted_at"):
        row.granted_at = changed.granted_at.ToDatetime(tzinfo=now.tzinfo)
    if changed.HasField("expires_at"):
        row.expires_at = changed.expires_at.ToDatetime(tzinfo=now.tzinfo)
    session.add(
        GrantTransition(
            grant_id=changed.grant_id,
            status=changed.status,
            at=now,
            reason=changed.reason,
            actor=changed.actor,
            detail=changed.detail,
        )
    )
