"""Kafka handlers of the request service."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.operations.record_decision import record_decision
from lapse_request.operations.record_grant_transition import record_grant_transition


@dataclass(frozen=True)
class RequestHandlers:
    clock: Clock

    async def on_decision(self, *, session: AsyncSession, event: DecodedEvent) -> None:
        assert isinstance(event.payload, events_pb2.RequestDecided)
        await record_decision(session=session, decided=event.payload, clock=self.clock)

    async def on_grant_fact(self, *, session: AsyncSession, event: DecodedEvent) -> None:
        assert isinstance(event.payload, events_pb2.GrantStatusChanged)
        await record_grant_transition(session=session, changed=event.payload, clock=self.clock)
