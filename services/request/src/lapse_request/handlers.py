"""Kafka handlers of the request service."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.access_events import AccessEventVerifier
from lapse_common.agent_reports import AgentRegistry
from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import access_events_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.agent_presence import record_heartbeat
from lapse_request.operations.apply_access_event import apply_access_event
from lapse_request.operations.record_decision import record_decision
from lapse_request.operations.record_grant_transition import record_grant_transition


@dataclass(frozen=True)
class RequestHandlers:
    clock: Clock
    topics: Topics
    # None: no producer registry configured, so every access event is refused.
    access_events: AccessEventVerifier | None = None
    # The enrolled agents' keys (None only in tests of other handlers).
    agents: AgentRegistry | None = None

    async def on_decision(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RequestDecided]
    ) -> None:
        await record_decision(session=session, decided=event.payload, clock=self.clock)

    async def on_grant_fact(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.GrantStatusChanged]
    ) -> None:
        await record_grant_transition(session=session, changed=event.payload, clock=self.clock)

    async def on_heartbeat(
        self,
        *,
        session: AsyncSession,
        event: DecodedEvent[events_pb2.SignedAgentReport | events_pb2.AgentHeartbeat],
    ) -> None:
        if self.agents is None:
            return
        # A heartbeat that does not verify must not make an agent look online.
        heartbeat = await self.agents.verify(event.payload, events_pb2.AgentHeartbeat)
        await record_heartbeat(session, heartbeat=heartbeat)

    async def on_access_event(
        self, *, session: AsyncSession, event: DecodedEvent[access_events_pb2.SignedAccessEvent]
    ) -> None:
        if self.access_events is None:
            raise RefusedMessage(
                "this request service trusts no access-event producers "
                "(LAPSE_REQUEST_ACCESS_EVENT_PRODUCERS_FILE is not set)"
            )
        verified = self.access_events.verify_decoded(event)
        await apply_access_event(
            session=session, event=verified, topics=self.topics, clock=self.clock
        )
