"""An approver approves or rejects a pending request."""

from __future__ import annotations

from lapse_common.auth import Identity
from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import decide
from lapse_approval.flows import ApprovalPolicy, Catalog
from lapse_approval.models import ApprovalCase, ApprovalVote, CaseStatus
from lapse_approval.operations.evaluate_quorum import Vote, eligible_tier, outcome


def policy_of(catalog: Catalog, flow_name: str) -> ApprovalPolicy:
    for flow in catalog.flows:
        if flow.name == flow_name:
            return flow.policy
    raise Refused(Refusal.CONFLICT, f"flow {flow_name!r} no longer exists")


async def decide_request(
    *,
    session: AsyncSession,
    approver: Identity,
    request_id: str,
    approve: bool,
    reason: str,
    catalog: Catalog,
    topics: Topics,
    clock: Clock,
) -> str:
    """Record the vote; returns the request's status afterwards."""
    case = await session.get(ApprovalCase, request_id, with_for_update=True)
    now = clock.now()
    tier = None
    if case is not None:
        policy = policy_of(catalog, case.flow)
        tier = eligible_tier(
            policy,
            subject=approver.subject,
            groups=approver.groups,
            submitted_at=as_utc(case.received_at),
            now=now,
        )
    # Someone who may not decide it learns nothing about it, not even that it exists.
    if case is None or tier is None:
        raise Refused(
            Refusal.NOT_FOUND,
            f"no request {request_id!r} waiting for {approver.subject}'s approval",
        )
    if case.status != CaseStatus.PENDING:
        raise Refused(Refusal.CONFLICT, f"request {request_id} is already {case.status}")
    if policy.requester_cannot_approve_self and approver.subject == case.requester:
        raise Refused(
            Refusal.FORBIDDEN,
            f"{approver.subject} requested {request_id} and may not decide it "
            f"(flow {case.flow!r}: requester cannot approve self)",
        )
    if (policy.approver_reason_required or not approve) and not reason.strip():
        raise Refused(
            Refusal.INVALID,
            "a reason is required to reject"
            if not approve
            else f"flow {case.flow!r} requires the approver to give a reason",
        )
    previous = (
        (await session.execute(select(ApprovalVote).where(ApprovalVote.request_id == request_id)))
        .scalars()
        .all()
    )
    if any(v.approver == approver.subject for v in previous):
        raise Refused(Refusal.CONFLICT, f"{approver.subject} already decided {request_id}")
    session.add(
        ApprovalVote(
            request_id=request_id,
            approver=approver.subject,
            approve=approve,
            reason=reason,
            tier=tier,
            at=now,
        )
    )
    votes = [Vote(v.approver, v.approve, v.tier) for v in previous]
    votes.append(Vote(approver.subject, approve, tier))
    result = outcome(policy, votes)
    if result is None:
        return case.status
    verb = "approved" if result else "rejected"
    await decide(
        session,
        case=case,
        decision=common_pb2.REQUEST_STATUS_APPROVED
        if result
        else common_pb2.REQUEST_STATUS_REJECTED,
        reason=common_pb2.REASON_APPROVER,
        decided_by=approver.subject,
        detail=f"{verb} by {', '.join(v.approver for v in votes if v.approve == result)}"
        + (f": {reason}" if reason else ""),
        topics=topics,
        clock=clock,
        approvers=sorted(v.approver for v in votes if v.approve),
    )
    return case.status
