"""An admin (or an IncidentResolved event) lifts a lockdown: requests in its scope are
accepted again."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import Lockdown


async def lift_lockdown(
    *,
    session: AsyncSession,
    actor: str,
    reason: str,
    topics: Topics,
    clock: Clock,
    lockdown_id: str = "",
    incident_id: str = "",
) -> list[Lockdown]:
    """Lift one lockdown by id, or every lockdown an incident set. Lifting one already lifted
    is refused by id (the caller should know) and a no-op by incident (events repeat)."""
    query = select(Lockdown).where(Lockdown.lifted_at.is_(None)).with_for_update()
    if lockdown_id:
        query = query.where(Lockdown.lockdown_id == lockdown_id)
    else:
        query = query.where(Lockdown.incident_id == incident_id)
    rows = list((await session.execute(query)).scalars().all())
    if lockdown_id and not rows:
        raise Refused(Refusal.NOT_FOUND, f"no lockdown {lockdown_id!r} in force")
    for row in rows:
        row.lifted_at = clock.now()
        row.lifted_by = actor
        enqueue(
            session,
            topic=topics.end_requests,
            key=row.lockdown_id,
            payload=events_pb2.LockdownLifted(
                lockdown_id=row.lockdown_id, actor=actor, reason=reason
            ),
            producer="request",
            clock=clock,
        )
    return rows
