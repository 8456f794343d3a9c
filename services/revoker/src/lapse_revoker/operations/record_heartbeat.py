"""Remember when each agent was last heard from."""

from __future__ import annotations

from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import AgentPresence


async def record_heartbeat(
    *, session: AsyncSession, heartbeat: events_pb2.AgentHeartbeat, clock: Clock
) -> None:
    # The revoker's own clock, not the agent's: an agent with a skewed clock must not look
    # alive (or dead) because of it.
    seen = clock.now()
    presence = await session.get(AgentPresence, heartbeat.agent_id, with_for_update=True)
    if presence is None:
        session.add(
            AgentPresence(
                agent_id=heartbeat.agent_id,
                last_seen_at=seen,
                integrations=",".join(heartbeat.integrations),
            )
        )
    elif as_utc(presence.last_seen_at) < seen:
        presence.last_seen_at = seen
        presence.integrations = ",".join(heartbeat.integrations)
