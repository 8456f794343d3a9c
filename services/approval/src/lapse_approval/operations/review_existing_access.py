"""After a policy change: reject pending requests the flows no longer allow, and withdraw or
shorten approvals whose grants the flows no longer allow (or no longer allow that long)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refused
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import decide
from lapse_approval.flows import Catalog, format_duration
from lapse_approval.models import ApprovalCase, CaseKind, CaseStatus, GrantExtension
from lapse_approval.operations.check_request import check_submitted


@dataclass
class ReviewResult:
    pending_rejected: int = 0
    approvals_withdrawn: int = 0
    approvals_shortened: int = 0


def _recheck(catalog: Catalog, submitted: events_pb2.RequestSubmitted, clock: Clock) -> timedelta:
    """The longest the flows now allow for every item; raises Refused if any item
    is no longer allowed at all."""
    checked = check_submitted(
        catalog=catalog,
        submitted=submitted,
        duration=None,
        now=clock.now(),
        # Time windows govern new requests, not access already granted.
        check_window=False,
    )
    return min((result.flow.max_duration for result in checked), default=timedelta.max)


async def review_existing_access(
    *, session: AsyncSession, catalog: Catalog, applied_by: str, topics: Topics, clock: Clock
) -> ReviewResult:
    result = ReviewResult()
    now = clock.now()
    cases = (
        (
            await session.execute(
                select(ApprovalCase).where(
                    ApprovalCase.status.in_([CaseStatus.PENDING, CaseStatus.APPROVED]),
                    ApprovalCase.withdrawn.is_(False),
                )
            )
        )
        .scalars()
        .all()
    )
    for case in cases:
        if case.kind == CaseKind.EXTENSION and case.status == CaseStatus.APPROVED:
            continue  # its time is part of the original request's approval, reviewed there
        submitted = events_pb2.RequestSubmitted()
        submitted.ParseFromString(case.submitted)
        if case.status == CaseStatus.APPROVED:
            extended = await session.scalar(
                select(func.coalesce(func.sum(GrantExtension.extend_by_seconds), 0)).where(
                    GrantExtension.request_id == case.request_id
                )
            )
            granted_for = timedelta(seconds=submitted.duration_seconds + int(extended or 0))
            if case.decided_at is None or as_utc(case.decided_at) + granted_for < now:
                continue  # long over: nothing of it can still be active
        try:
            allowed = _recheck(catalog, submitted, clock)
        except Refused as refusal:
            detail = f"policy change by {applied_by}: {refusal.message}"
            if case.status == CaseStatus.PENDING:
                await decide(
                    session,
                    case=case,
                    decision=common_pb2.REQUEST_STATUS_REJECTED,
                    reason=common_pb2.REASON_POLICY_CHANGE,
                    decided_by=applied_by,
                    detail=detail,
                    topics=topics,
                    clock=clock,
                )
                result.pending_rejected += 1
            else:
                case.withdrawn = True
                enqueue(
                    session,
                    topic=topics.decisions,
                    key=case.request_id,
                    payload=events_pb2.ApprovalWithdrawn(
                        request_id=case.request_id, withdrawn_by=applied_by, detail=detail
                    ),
                    producer="approval",
                    clock=clock,
                    request_id=case.request_id,
                )
                result.approvals_withdrawn += 1
            continue
        if case.status == CaseStatus.APPROVED and allowed < granted_for:
            seconds = int(allowed.total_seconds())
            if case.max_duration_seconds is not None and case.max_duration_seconds <= seconds:
                continue
            case.max_duration_seconds = seconds
            enqueue(
                session,
                topic=topics.decisions,
                key=case.request_id,
                payload=events_pb2.ApprovalShortened(
                    request_id=case.request_id,
                    max_duration_seconds=seconds,
                    detail=f"policy change by {applied_by}: the flow now allows at most "
                    f"{format_duration(allowed)}",
                ),
                producer="approval",
                clock=clock,
                request_id=case.request_id,
            )
            result.approvals_shortened += 1
    return result
