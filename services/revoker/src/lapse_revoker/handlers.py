"""Kafka handlers of the revoker."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.agent_reports import AgentRegistry, refuse_replays
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.operations.accept_revoke_request import accept_revoke_request
from lapse_revoker.operations.record_heartbeat import record_heartbeat
from lapse_revoker.operations.record_revoke_result import record_revoke_result
from lapse_revoker.revoker_context import RevokerContext


@dataclass(frozen=True)
class RevokerHandlers:
    ctx: RevokerContext
    agents: AgentRegistry

    async def on_revoke_requested(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RevokeRequested]
    ) -> None:
        await accept_revoke_request(session=session, requested=event.payload, ctx=self.ctx)

    async def on_agent_result(
        self,
        *,
        session: AsyncSession,
        event: DecodedEvent[events_pb2.SignedAgentReport | events_pb2.AgentResult],
    ) -> None:
        result = await self.agents.verify(event.payload, events_pb2.AgentResult)
        await refuse_replays(
            session, payload=event.payload, consumer="revoker-results", now=self.ctx.clock.now()
        )
        await record_revoke_result(session=session, result=result, ctx=self.ctx)

    async def on_heartbeat(
        self,
        *,
        session: AsyncSession,
        event: DecodedEvent[events_pb2.SignedAgentReport | events_pb2.AgentHeartbeat],
    ) -> None:
        # A heartbeat that does not verify must not make an agent look online.
        heartbeat = await self.agents.verify(event.payload, events_pb2.AgentHeartbeat)
        await record_heartbeat(session=session, heartbeat=heartbeat, clock=self.ctx.clock)
