"""End a grant early at its requester's (or an admin's) request."""

from __future__ import annotations

from lapse_common.auth import ADMIN_ROLE, Identity
from lapse_common.clock import Clock
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import GrantActivity


class RevokeRefused(Exception):
    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


async def revoke_grant(
    *,
    session: AsyncSession,
    identity: Identity,
    grant_id: str,
    reason: str,
    topics: Topics,
    clock: Clock,
) -> GrantActivity:
    grant = await session.get(GrantActivity, grant_id, with_for_update=True)
    is_admin = identity.has_role(ADMIN_ROLE)
    # Someone else's grant is reported as absent, so grant ids cannot be probed.
    if grant is None or (grant.requester != identity.subject and not is_admin):
        raise RevokeRefused(f"no grant {grant_id!r} of yours", not_found=True)
    if grant.status != common_pb2.GRANT_STATUS_ACTIVE:
        status = common_pb2.GrantStatus.Name(common_pb2.GrantStatus.ValueType(grant.status))
        raise RevokeRefused(
            f"grant {grant_id} is {status.removeprefix('GRANT_STATUS_')}, only ACTIVE access "
            "can be revoked"
        )
    own = grant.requester == identity.subject
    requested = events_pb2.RevokeRequested(
        grant_id=grant.grant_id,
        request_id=grant.request_id,
        # A newer epoch than any command so far: the scheduler stops its expiry timer and
        # the revoker takes it over.
        epoch=grant.epoch + 1,
        spec=grant_spec_of(grant),
        reason=common_pb2.REASON_USER if own else common_pb2.REASON_ADMIN,
        actor=identity.subject + (f": {reason}" if reason else ""),
        requester=grant.requester,
    )
    requested.due_at.FromDatetime(clock.now())
    enqueue(
        session,
        topic=topics.revoke_requests,
        key=grant.grant_id,
        payload=requested,
        producer="request",
        clock=clock,
        request_id=grant.request_id,
        grant_id=grant.grant_id,
    )
    return grant
