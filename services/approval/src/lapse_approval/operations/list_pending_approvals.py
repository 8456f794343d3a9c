"""The requests waiting for this approver's decision (and only those)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from lapse_common.auth import Identity
from lapse_common.clock import Clock, as_utc
from lapse_common.paging import PageRequest, time_key
from lapse_common.pb.lapse.v1 import approval_service_pb2, events_pb2
from lapse_common.refusals import Refused
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Catalog
from lapse_approval.models import ApprovalCase, ApprovalVote, CaseKind, CaseStatus
from lapse_approval.operations.decide_request import policy_of
from lapse_approval.operations.evaluate_quorum import eligible_tier, votes_needed


async def list_pending_approvals(
    *,
    session: AsyncSession,
    approver: Identity,
    catalog: Catalog,
    clock: Clock,
    page: PageRequest,
) -> tuple[list[approval_service_pb2.PendingApproval], str]:
    """Oldest first, one page of what this approver may decide, and the token for the next
    ("" on the last). Cases are read in batches: which of them this approver sees is
    decided per case by its flow's policy and escalation tiers."""
    pending: list[approval_service_pb2.PendingApproval] = []
    after = page.after_time()
    while len(pending) <= page.size:
        batch = await _pending_cases(session, after=after, limit=page.size + 1)
        for case in batch:
            view = await _view_for(session, case, approver=approver, catalog=catalog, clock=clock)
            if view is not None:
                pending.append(view)
                if len(pending) > page.size:
                    break
        if len(batch) <= page.size:
            break
        after = (as_utc(batch[-1].received_at), batch[-1].request_id)
    if len(pending) <= page.size:
        return pending, ""
    last = pending[page.size - 1]
    return pending[: page.size], page.next_token(
        time_key(last.submitted_at.ToDatetime(tzinfo=UTC), last.request_id)
    )


async def _pending_cases(
    session: AsyncSession, *, after: tuple[datetime, str] | None, limit: int
) -> Sequence[ApprovalCase]:
    query = (
        select(ApprovalCase)
        .where(ApprovalCase.status == CaseStatus.PENDING)
        .order_by(ApprovalCase.received_at, ApprovalCase.request_id)
        .limit(limit)
    )
    if after is not None:
        moment, request_id = after
        query = query.where(
            or_(
                ApprovalCase.received_at > moment,
                and_(ApprovalCase.received_at == moment, ApprovalCase.request_id > request_id),
            )
        )
    return (await session.execute(query)).scalars().all()


async def _view_for(
    session: AsyncSession,
    case: ApprovalCase,
    *,
    approver: Identity,
    catalog: Catalog,
    clock: Clock,
) -> approval_service_pb2.PendingApproval | None:
    """The case as this approver sees it, or None when it is not theirs to decide."""
    try:
        policy = policy_of(catalog, case.flow)
    except Refused:
        return None
    tier = eligible_tier(
        policy,
        subject=approver.subject,
        groups=approver.groups,
        submitted_at=as_utc(case.received_at),
        now=clock.now(),
    )
    if tier is None:
        return None
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
        may_decide=not (policy.requester_cannot_approve_self and case.requester == approver.subject)
        and all(v.approver != approver.subject for v in votes),
    )
    if case.kind == CaseKind.EXTENSION:
        view.extends_request_id = case.extends_request_id or ""
        view.grant_id = case.grant_id or ""
        view.extend_by_seconds = case.extend_by_seconds or 0
    view.submitted_at.FromDatetime(as_utc(case.received_at))
    if case.expires_at is not None:
        view.expires_at.FromDatetime(as_utc(case.expires_at))
    return view
