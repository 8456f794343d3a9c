"""The requests waiting for this approver's decision (and only those)."""

from __future__ import annotations

from lapse_common.auth import Identity
from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import approval_service_pb2, events_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Catalog
from lapse_approval.models import ApprovalCase, ApprovalVote, CaseKind, CaseStatus
from lapse_approval.operations.decide_request import DecisionRefused, policy_of
from lapse_approval.operations.evaluate_quorum import eligible_tier, votes_needed


async def list_pending_approvals(
    *, session: AsyncSession, approver: Identity, catalog: Catalog, clock: Clock
) -> list[approval_service_pb2.PendingApproval]:
    cases = (
        (
            await session.execute(
                select(ApprovalCase)
                .where(ApprovalCase.status == CaseStatus.PENDING)
                .order_by(ApprovalCase.received_at)
            )
        )
        .scalars()
        .all()
    )
    pending = []
    for case in cases:
        try:
            policy = policy_of(catalog, case.flow)
        except DecisionRefused:
            continue
        tier = eligible_tier(
            policy,
            subject=approver.subject,
            groups=approver.groups,
            submitted_at=as_utc(case.received_at),
            now=clock.now(),
        )
        if tier is None:
            continue
        votes = (
            (
                await session.execute(
                    select(ApprovalVote).where(ApprovalVote.request_id == case.request_id)
                )
            )
            .scalars()
            .all()
        )
        submitted = events_pb2.RequestSubmitted()
        submitted.ParseFromString(case.submitted)
        view = approval_service_pb2.PendingApproval(
            request_id=case.request_id,
            requester=case.requester,
            flow=case.flow,
            items=list(submitted.items),
            duration_seconds=submitted.duration_seconds,
            justification=submitted.justification,
            approvals=sorted(v.approver for v in votes if v.approve),
            approvals_needed=votes_needed(policy),
            may_decide=not (
                policy.requester_cannot_approve_self and case.requester == approver.subject
            )
            and all(v.approver != approver.subject for v in votes),
        )
        if case.kind == CaseKind.EXTENSION:
            view.extends_request_id = case.extends_request_id or ""
            view.grant_id = case.grant_id or ""
            view.extend_by_seconds = case.extend_by_seconds or 0
        view.submitted_at.FromDatetime(as_utc(case.received_at))
        if case.expires_at is not None:
            view.expires_at.FromDatetime(as_utc(case.expires_at))
        pending.append(view)
    return pending
