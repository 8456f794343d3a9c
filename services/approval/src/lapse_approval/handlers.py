"""Kafka handlers: decode-level glue only; the decisions live in operations/."""

from __future__ import annotations

from dataclasses import dataclass

from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.live_catalog import LiveCatalog
from lapse_approval.operations.cancel_pending_approval import cancel_pending_approval
from lapse_approval.operations.decide_submitted_request import decide_submitted_request
from lapse_approval.operations.record_grant_of_request import record_grant_of_request


@dataclass(frozen=True)
class ApprovalHandlers:
    catalog: LiveCatalog
    topics: Topics
    clock: Clock

    async def on_request_submitted(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RequestSubmitted]
    ) -> None:
        await decide_submitted_request(
            session=session,
            submitted=event.payload,
            catalog=self.catalog.current,
            topics=self.topics,
            clock=self.clock,
        )

    async def on_request_canceled(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RequestCanceled]
    ) -> None:
        await cancel_pending_approval(session=session, canceled=event.payload, clock=self.clock)

    async def on_grant_fact(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.GrantStatusChanged]
    ) -> None:
        await record_grant_of_request(session=session, fact=event.payload)
