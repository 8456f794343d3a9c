"""Which agents are online (heartbeats seen recently), for the panic preview and progress."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import events_pb2, request_service_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import AgentPresence, GrantActivity


async def record_heartbeat(session: AsyncSession, *, heartbeat: events_pb2.AgentHeartbeat) -> None:
    seen = as_utc(heartbeat.sent_at.ToDatetime())
    row = await session.get(AgentPresence, heartbeat.agent_id)
    if row is None:
        session.add(AgentPresence(agent_id=heartbeat.agent_id, last_seen_at=seen))
    elif as_utc(row.last_seen_at) < seen:
        row.last_seen_at = seen


async def online_agents(
    session: AsyncSession, *, clock: Clock, offline_after: timedelta
) -> set[str]:
    seen = (await session.execute(select(AgentPresence))).scalars().all()
    now = clock.now()
    return {a.agent_id for a in seen if now - as_utc(a.last_seen_at) <= offline_after}


def count_per_agent(
    grants: list[GrantActivity], online: set[str]
) -> list[request_service_pb2.AgentCount]:
    counts = Counter((g.integration_id, g.agent_id) for g in grants)
    return [
        request_service_pb2.AgentCount(
            integration_id=integration, agent_id=agent, grants=n, online=agent in online
        )
        for (integration, agent), n in sorted(counts.items())
    ]
