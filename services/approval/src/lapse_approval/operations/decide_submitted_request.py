"""Evaluate a submitted request against its flow and publish the decision."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Catalog
from lapse_approval.models import ApprovalCase
from lapse_approval.operations.check_request import RequestRefused, check_request


async def decide_submitted_request(
    *,
    session: AsyncSession,
    submitted: events_pb2.RequestSubmitted,
    catalog: Catalog,
    topics: Topics,
    clock: Clock,
) -> None:
    if await session.get(ApprovalCase, submitted.request_id) is not None:
        return
    # Policy may have changed since the request service checked it: decide on today's flows.
    # Every flow is automatic today; approver quorums arrive with the approval policies.
    decision = common_pb2.REQUEST_STATUS_APPROVED
    reason = common_pb2.REASON_AUTO_APPROVAL
    detail = f"auto-approved by flow {submitted.flow!r}"
    try:
        for item in submitted.items:
            check_request(
                catalog=catalog,
                subject=submitted.requester,
                groups=tuple(submitted.requester_groups),
                integration_id=item.integration_id,
                resource=item.resource,
                permission=item.permission,
                principal=item.principal,
                duration=timedelta(seconds=submitted.duration_seconds),
                justification=submitted.justification,
            )
    except RequestRefused as refusal:
        decision = common_pb2.REQUEST_STATUS_REJECTED
        reason = common_pb2.REASON_POLICY_CHANGE
        detail = f"rejected: {refusal.message}"
    session.add(
        ApprovalCase(
            request_id=submitted.request_id,
            requester=submitted.requester,
            flow=submitted.flow,
            status=common_pb2.RequestStatus.Name(decision),
            detail=detail,
            received_at=clock.now(),
            decided_at=clock.now(),
        )
    )
    enqueue(
        session,
        topic=topics.decisions,
        key=submitted.request_id,
        payload=events_pb2.RequestDecided(
            request_id=submitted.request_id,
            decision=decision,
            decided_by="lapse-approval",
            reason=reason,
            detail=detail,
            flow=submitted.flow,
            requester=submitted.requester,
            items=list(submitted.items),
            duration_seconds=submitted.duration_seconds,
        ),
        producer="approval",
        clock=clock,
        request_id=submitted.request_id,
    )
