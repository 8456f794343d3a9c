"""What a scoped revocation or panic would end, per integration and agent, before anyone
confirms it. The fingerprint lets the confirmation refuse a scope whose access changed."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import Reach, load_in_scope, load_pending_in_scope
from lapse_request.agent_presence import count_per_agent, online_agents


def fingerprint_of(grant_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(grant_ids)).encode()).hexdigest()[:16]


async def preview_revocation(
    *,
    session: AsyncSession,
    scope: common_pb2.AccessScope,
    reach: Reach,
    clock: Clock,
    offline_after: timedelta,
) -> request_service_pb2.RevocationPreview:
    grants = [grant for grant, _ in await load_in_scope(session, scope, reach)]
    online = await online_agents(session, clock=clock, offline_after=offline_after)
    pending = await load_pending_in_scope(session, scope, reach) if not reach.approved_by else []
    return request_service_pb2.RevocationPreview(
        grants=len(grants),
        users=len({g.requester for g in grants}),
        per_agent=count_per_agent(grants, online),
        fingerprint=fingerprint_of([g.grant_id for g in grants]),
        pending_requests=len(pending),
    )
