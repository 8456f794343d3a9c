"""An admin (or an incident event) locks a scope down: new requests in it are refused until
the lockdown is lifted."""

from __future__ import annotations

import uuid

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import check_scope_shape
from lapse_request.lockdown_rows import pack_scope
from lapse_request.models import Lockdown


async def set_lockdown(
    *,
    session: AsyncSession,
    actor: str,
    scope: common_pb2.AccessScope,
    reason: str,
    topics: Topics,
    clock: Clock,
    incident_id: str = "",
) -> Lockdown:
    check_scope_shape(scope)
    row = Lockdown(
        lockdown_id=f"ld-{uuid.uuid4().hex[:12]}",
        scope=pack_scope(scope),
        set_by=actor,
        reason=reason,
        set_at=clock.now(),
        incident_id=incident_id,
        lifted_by="",
    )
    session.add(row)
    enqueue(
        session,
        topic=topics.end_requests,
        key=row.lockdown_id,
        payload=events_pb2.LockdownSet(
            lockdown_id=row.lockdown_id,
            scope=scope,
            actor=actor,
            reason=reason,
            incident_id=incident_id,
        ),
        producer="request",
        clock=clock,
    )
    return row
