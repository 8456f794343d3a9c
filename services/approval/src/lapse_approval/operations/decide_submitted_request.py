"""A request was submitted: approve it at once under an automatic flow, otherwise open a
case that waits for its approvers (or its timeout)."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import decide
from lapse_approval.flows import Catalog, parse_duration
from lapse_approval.models import ApprovalCase, CaseStatus
from lapse_approval.operations.auto_approve_budget import enforce_auto_approve_budget
from lapse_approval.operations.check_request import Allowed, check_submitted


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
    checked: list[Allowed] = []
    try:
        if not submitted.items:
            raise Refused(Refusal.INVALID, "the request names no access")
        checked = check_submitted(
            catalog=catalog,
            submitted=submitted,
            duration=timedelta(seconds=submitted.duration_seconds),
            now=clock.now(),
        )
        for allowed in checked:
            if allowed.flow.policy.mode == "auto":
                await enforce_auto_approve_budget(
                    session, flow=allowed.flow, requester=submitted.requester, now=clock.now()
                )
    except Refused as refusal:
        await decide(
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
    if _complete(submitted, checked):
        case.submitted = submitted.SerializeToString(deterministic=True)
    allowed = checked[-1]
    policy = allowed.flow.policy
    case.flow = allowed.flow.name
    if policy.mode == "auto":
        case.auto_approved = True
        await decide(
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


def _complete(submitted: events_pb2.RequestSubmitted, checked: list[Allowed]) -> bool:
    """A machine's request (an access event) names no agent or duration: the catalog's agent
    and the flow's default fill them, so the decision stays self-contained. Returns whether
    anything was filled in."""
    filled = False
    for item, allowed in zip(submitted.items, checked, strict=True):
        if not item.agent_id:
            item.agent_id = allowed.agent_id
            filled = True
    if submitted.duration_seconds == 0:
        submitted.duration_seconds = int(min(a.duration for a in checked).total_seconds())
        filled = True
    if not submitted.flow:
        submitted.flow = checked[-1].flow.name
        filled = True
    return filled
