"""Submit an access request: validate, check policy with the approval service, then record
the request and its RequestSubmitted event in one transaction."""

from __future__ import annotations

import re
import uuid

from lapse_common.auth import Identity
from lapse_common.clock import Clock
from lapse_common.field_bounds import MAX_SECONDS
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import approval_service_pb2, common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import wrap_list
from lapse_request.items import pack_items
from lapse_request.models import AccessRequest
from lapse_request.operations.check_lockdown import check_lockdown

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.@*-]{1,255}$")
MAX_JUSTIFICATION = 2000


def validate_submission(
    *,
    integration_id: str,
    resource: str,
    permission: str,
    principal: str,
    duration_seconds: int,
    justification: str,
) -> None:
    """Refuse (INVALID) malformed input before anything else sees it."""
    fields = {
        "integration_id": integration_id,
        "resource": resource,
        "permission": permission,
        "principal": principal,
    }
    for name, value in fields.items():
        if not value:
            raise Refused(Refusal.INVALID, f"{name} is required")
        if not _IDENTIFIER.match(value):
            raise Refused(
                Refusal.INVALID,
                f"{name} {value!r} may contain only letters, digits, '_', '.', '@', '*' and '-'",
            )
    if duration_seconds < 0:
        raise Refused(
            Refusal.INVALID, "duration_seconds must not be negative (0 means the flow default)"
        )
    # Access events arrive from Kafka, not through the screened gRPC API: same bound here.
    if duration_seconds > MAX_SECONDS:
        raise Refused(Refusal.INVALID, f"duration_seconds must be at most {MAX_SECONDS}")
    if len(justification) > MAX_JUSTIFICATION:
        raise Refused(
            Refusal.INVALID, f"justification is longer than {MAX_JUSTIFICATION} characters"
        )


async def submit_request(
    *,
    session: AsyncSession,
    identity: Identity,
    checked: approval_service_pb2.CheckRequestResponse,
    justification: str,
    topics: Topics,
    clock: Clock,
) -> AccessRequest:
    """Record a request the approval service allowed, unless a lockdown covers it: then it
    is Refused (CONFLICT), naming the lockdown. Lockdowns are kept here, not by the approval
    service, so its answer cannot include them."""
    await check_lockdown(
        session=session,
        requester=identity.subject,
        groups=identity.groups,
        flow=checked.flow,
        item=checked.item,
    )
    return await record_submission(
        session=session,
        identity=identity,
        checked=checked,
        justification=justification,
        topics=topics,
        clock=clock,
    )


async def record_submission(
    *,
    session: AsyncSession,
    identity: Identity,
    checked: approval_service_pb2.CheckRequestResponse,
    justification: str,
    topics: Topics,
    clock: Clock,
) -> AccessRequest:
    now = clock.now()
    request_id = f"req-{uuid.uuid4()}"
    row = AccessRequest(
        request_id=request_id,
        requester=identity.subject,
        flow=checked.flow,
        status=common_pb2.REQUEST_STATUS_PENDING_APPROVAL,
        justification=justification,
        duration_seconds=checked.duration_seconds,
        items_blob=pack_items([checked.item]),
        requester_groups=wrap_list(identity.groups),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    submitted = events_pb2.RequestSubmitted(
        request_id=request_id,
        requester=identity.subject,
        requester_groups=list(identity.groups),
        flow=checked.flow,
        items=[checked.item],
        duration_seconds=checked.duration_seconds,
        justification=justification,
    )
    submitted.submitted_at.FromDatetime(now)
    enqueue(
        session,
        topic=topics.requests,
        key=request_id,
        payload=submitted,
        producer="request",
        clock=clock,
        request_id=request_id,
    )
    return row
