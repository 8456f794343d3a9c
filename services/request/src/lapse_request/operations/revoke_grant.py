"""End one grant early: its requester, an approver of its request, or an admin."""

from __future__ import annotations

from lapse_common.auth import ADMIN_ROLE, Identity
from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import AccessRequest, GrantActivity
from lapse_request.revocation_request import request_revocation


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
    if grant is None:
        raise Refused(Refusal.NOT_FOUND, f"no grant {grant_id!r}")
    request = await session.get(AccessRequest, grant.request_id)
    approvers = request.approvers if request is not None else ","
    if grant.requester == identity.subject:
        why = common_pb2.REASON_USER
    elif f",{identity.subject}," in approvers:
        why = common_pb2.REASON_APPROVER
    elif identity.has_role(ADMIN_ROLE):
        why = common_pb2.REASON_ADMIN
    else:
        raise Refused(
            Refusal.FORBIDDEN,
            f"{identity.subject} may not revoke grant {grant_id}: it is {grant.requester}'s and "
            f"{identity.subject} did not approve it (admins may revoke any grant)",
        )
    if grant.status != common_pb2.GRANT_STATUS_ACTIVE or grant.revoke_requested_at is not None:
        status = common_pb2.GrantStatus.Name(common_pb2.GrantStatus.ValueType(grant.status))
        state = status.removeprefix("GRANT_STATUS_")
        if grant.status == common_pb2.GRANT_STATUS_ACTIVE:
            state = "already being revoked"
        raise Refused(
            Refusal.CONFLICT, f"grant {grant_id} is {state}, only ACTIVE access can be revoked"
        )
    request_revocation(
        session,
        grant=grant,
        reason=why,
        actor=identity.subject + (f": {reason}" if reason else ""),
        topics=topics,
        clock=clock,
    )
    return grant
