"""Reflect an approval decision in the request's status."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import wrap_list
from lapse_request.models import AccessRequest

_FINAL = {
    common_pb2.REQUEST_STATUS_APPROVED,
    common_pb2.REQUEST_STATUS_REJECTED,
    common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED,
    common_pb2.REQUEST_STATUS_CANCELED,
}


async def record_decision(
    *, session: AsyncSession, decided: events_pb2.RequestDecided, clock: Clock
) -> None:
    row = await session.get(AccessRequest, decided.request_id, with_for_update=True)
    if row is None:
        # Submitted through another channel (e.g. a machine identity): nothing to update.
        return
    if row.status in _FINAL:
        return
    row.status = decided.decision
    row.decided_by = decided.decided_by
    row.decision_detail = decided.detail
    row.approvers = wrap_list(decided.approvers)
    row.updated_at = clock.now()
