"""Publishing a decision on lapse.decisions.v1 (self-contained for the scheduler).

A request's decision is a RequestDecided; an extension case's is ExtensionApproved (the
expiry moves) or ExtensionRefused, keyed by the original request so both land in order with
the rest of that request's history."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.models import ApprovalCase, CaseKind, GrantExtension

STATUS_OF = {
    common_pb2.REQUEST_STATUS_APPROVED: "APPROVED",
    common_pb2.REQUEST_STATUS_REJECTED: "REJECTED",
    common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED: "APPROVAL_EXPIRED",
}


async def extensions_used(session: AsyncSession, *, grant_id: str) -> int:
    """Extensions granted to the grant so far (counted against the flow's max_extensions)."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(GrantExtension)
            .where(GrantExtension.grant_id == grant_id)
        )
        or 0
    )


async def approve_extension(
    session: AsyncSession,
    *,
    request_id: str,
    requester: str,
    grant_id: str,
    extend_by_seconds: int,
    approved_by: str,
    extension_id: str,
    topics: Topics,
    clock: Clock,
) -> int:
    """Count the extension and tell the scheduler to move the expiry; returns its number."""
    number = await extensions_used(session, grant_id=grant_id) + 1
    session.add(
        GrantExtension(
            request_id=request_id,
            grant_id=grant_id,
            extend_by_seconds=extend_by_seconds,
            approved_at=clock.now(),
        )
    )
    enqueue(
        session,
        topic=topics.decisions,
        key=request_id,
        payload=events_pb2.ExtensionApproved(
            request_id=request_id,
            grant_id=grant_id,
            extend_by_seconds=extend_by_seconds,
            approved_by=approved_by,
            extension_number=number,
            extension_id=extension_id,
            requester=requester,
        ),
        producer="approval",
        clock=clock,
        request_id=request_id,
        grant_id=grant_id,
    )
    return number


async def decide(
    session: AsyncSession,
    *,
    case: ApprovalCase,
    decision: common_pb2.RequestStatus.ValueType,
    reason: common_pb2.Reason.ValueType,
    decided_by: str,
    detail: str,
    topics: Topics,
    clock: Clock,
    approvers: Sequence[str] = (),
) -> None:
    case.status = STATUS_OF[decision]
    case.detail = detail
    case.decided_at = clock.now()
    if case.kind == CaseKind.EXTENSION:
        await _decide_extension(
            session, case=case, decision=decision, decided_by=decided_by, topics=topics, clock=clock
        )
        return
    submitted = events_pb2.RequestSubmitted()
    submitted.ParseFromString(case.submitted)
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
            approvers=list(approvers),
        ),
        producer="approval",
        clock=clock,
        request_id=case.request_id,
    )


async def _decide_extension(
    session: AsyncSession,
    *,
    case: ApprovalCase,
    decision: common_pb2.RequestStatus.ValueType,
    decided_by: str,
    topics: Topics,
    clock: Clock,
) -> None:
    assert case.extends_request_id and case.grant_id and case.extend_by_seconds
    if decision == common_pb2.REQUEST_STATUS_APPROVED:
        await approve_extension(
            session,
            request_id=case.extends_request_id,
            requester=case.requester,
            grant_id=case.grant_id,
            extend_by_seconds=case.extend_by_seconds,
            approved_by=decided_by,
            extension_id=case.request_id,
            topics=topics,
            clock=clock,
        )
        return
    enqueue(
        session,
        topic=topics.decisions,
        key=case.extends_request_id,
        payload=events_pb2.ExtensionRefused(
            request_id=case.extends_request_id,
            grant_id=case.grant_id,
            extension_id=case.request_id,
            decision=decision,
            decided_by=decided_by,
            detail=case.detail,
            requester=case.requester,
        ),
        producer="approval",
        clock=clock,
        request_id=case.extends_request_id,
        grant_id=case.grant_id,
    )
