"""The requester withdrew the request: approvers no longer see it."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.models import ApprovalCase, CaseStatus


async def cancel_pending_approval(
    *, session: AsyncSession, canceled: events_pb2.RequestCanceled, clock: Clock
) -> None:
    case = await session.get(ApprovalCase, canceled.request_id, with_for_update=True)
    if case is None or case.status != CaseStatus.PENDING:
        return
    case.status = CaseStatus.CANCELED
    case.decided_at = clock.now()
    case.detail = f"canceled by {canceled.canceled_by}" + (
        f": {canceled.reason}" if canceled.reason else ""
    )
