"""Remember which request a grant belongs to, from the grant facts the scheduler publishes."""

from __future__ import annotations

from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.models import GrantOfRequest


async def record_grant_of_request(
    *, session: AsyncSession, fact: events_pb2.GrantStatusChanged
) -> None:
    if not fact.grant_id or not fact.request_id:
        return
    # A grant never moves to another request; the first fact that names it decides, and
    # every later fact of the same grant (there are several per lifecycle) is a no-op.
    if await session.get(GrantOfRequest, fact.grant_id) is None:
        session.add(GrantOfRequest(grant_id=fact.grant_id, request_id=fact.request_id))
