"""A requester withdraws a request that is still waiting for approval."""

from __future__ import annotations

from lapse_common.auth import ADMIN_ROLE, Identity
from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import AccessRequest


async def cancel_request(
    *,
    session: AsyncSession,
    identity: Identity,
    request_id: str,
    reason: str,
    topics: Topics,
    clock: Clock,
) -> AccessRequest:
    row = await session.get(AccessRequest, request_id, with_for_update=True)
    if row is None:
        raise Refused(Refusal.NOT_FOUND, f"no request {request_id!r}")
    if row.requester != identity.subject and not identity.has_role(ADMIN_ROLE):
        raise Refused(Refusal.FORBIDDEN, "only the requester or an admin may cancel a request")
    if row.status != common_pb2.REQUEST_STATUS_PENDING_APPROVAL:
        status_name = common_pb2.RequestStatus.Name(common_pb2.RequestStatus.ValueType(row.status))
        status = status_name.removeprefix("REQUEST_STATUS_")
        raise Refused(
            Refusal.CONFLICT,
            f"request {request_id} is {status}, only a PENDING_APPROVAL request can be canceled"
            " (use revoke to end active access)",
        )
    withdraw_request(
        session, row=row, canceled_by=identity.subject, reason=reason, topics=topics, clock=clock
    )
    return row


def withdraw_request(
    session: AsyncSession,
    *,
    row: AccessRequest,
    canceled_by: str,
    reason: str,
    topics: Topics,
    clock: Clock,
) -> None:
    """Mark a pending request CANCELED and tell the approval service to stop waiting."""
    row.status = common_pb2.REQUEST_STATUS_CANCELED
    row.decided_by = canceled_by
    row.decision_detail = f"canceled by {canceled_by}" + (f": {reason}" if reason else "")
    row.updated_at = clock.now()
    enqueue(
        session,
        topic=topics.requests,
        key=row.request_id,
        payload=events_pb2.RequestCanceled(
            request_id=row.request_id, canceled_by=canceled_by, reason=reason
        ),
        producer="request",
        clock=clock,
        request_id=row.request_id,
    )
