"""A request was submitted: approve it at once under an automatic flow, otherwise open a
case that waits for its approvers (or its timeout)."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import decide
from lapse_approval.flows import Catalog, parse_duration
from lapse_approval.models import ApprovalCase, CaseStatus
from lapse_approval.operations.auto_approve_budget import enforce_auto_approve_budget
from lapse_approval.operations.check_request import Allowed, RequestRefused, check_submitted


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
    case = ApprovalCase(
        request_id=submitted.request_id,
        requester=submitted.requester,
        flow=submitted.flow,
        status=CaseStatus.PENDING,
        received_at=clock.now(),
        submitted=submitted.SerializeToString(deterministic=True),
    )
    session.add(case)
    # Policy may have changed since the request service checked it: decide on today's flows.
    allowed: Allowed | None = None
    try:
        for allowed in check_submitted(
            catalog=catalog,
            submitted=submitted,
            duration=timedelta(seconds=submitted.duration_seconds),
            now=clock.now(),
        ):
            if allowed.flow.policy.mode == "auto":
                await enforce_auto_approve_budget(
                    session, flow=allowed.flow, requester=submitted.requester, now=clock.now()
                )
    except RequestRefused as refusal:
        decide(
            session,
            case=case,
            decision=common_pb2.REQUEST_STATUS_REJECTED,
            reason=common_pb2.REASON_POLICY_CHANGE,
            decided_by="lapse-approval",
            detail=f"rejected: {refusal.message}",
            topics=topics,
            clock=clock,
        )
        return
    assert allowed is not None
    policy = allowed.flow.policy
    case.flow = allowed.flow.name
    if policy.mode == "auto":
        case.auto_approved = True
        decide(
            session,
            case=case,
            decision=common_pb2.REQUEST_STATUS_APPROVED,
            reason=common_pb2.REASON_AUTO_APPROVAL,
            decided_by="lapse-approval",
            detail=f"auto-approved by flow {allowed.flow.name!r}",
            topics=topics,
            clock=clock,
        )
        return
    case.expires_at = clock.now() + parse_duration(policy.timeout)
