"""Publishing a decision on lapse.decisions.v1 (self-contained for the scheduler)."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.models import ApprovalCase

STATUS_OF = {
    common_pb2.REQUEST_STATUS_APPROVED: "APPROVED",
    common_pb2.REQUEST_STATUS_REJECTED: "REJECTED",
    common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED: "APPROVAL_EXPIRED",
}


def decide(
    session: AsyncSession,
    *,
    case: ApprovalCase,
    decision: common_pb2.RequestStatus.ValueType,
    reason: common_pb2.Reason.ValueType,
    decided_by: str,
    detail: str,
    topics: Topics,
    clock: Clock,
) -> None:
    submitted = events_pb2.RequestSubmitted()
    submitted.ParseFromString(case.submitted)
    case.status = STATUS_OF[decision]
    case.detail = detail
    case.decided_at = clock.now()
    enqueue(
        session,
        topic=topics.decisions,
        key=case.request_id,
        payload=events_pb2.RequestDecided(
            request_id=case.request_id,
            decision=decision,
            decided_by=decided_by,
            reason=reason,
            detail=detail,
            flow=case.flow,
            requester=case.requester,
            items=list(submitted.items),
            duration_seconds=submitted.duration_seconds,
        ),
        producer="approval",
        clock=clock,
        request_id=case.request_id,
    )
