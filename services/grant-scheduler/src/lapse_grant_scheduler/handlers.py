"""Kafka handlers of the grant-scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from google.protobuf.message import DecodeError, Message
from lapse_common.agent_reports import AgentRegistry, refuse_replays
from lapse_common.clock import Clock
from lapse_common.command_signing import CommandSigner
from lapse_common.db import after_commit
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.expiry_timer import ExpiryTimer
from lapse_grant_scheduler.operations.apply_approval_change import (
    extend_active_grant,
    shorten_approval,
    withdraw_approval,
)
from lapse_grant_scheduler.operations.create_grants import create_grants
from lapse_grant_scheduler.operations.end_grant_early import end_grant_early
from lapse_grant_scheduler.operations.record_grant_result import record_grant_result


@dataclass(frozen=True)
class SchedulerHandlers:
    signer: CommandSigner
    topics: Topics
    clock: Clock
    timer: ExpiryTimer
    expiry_notice: timedelta
    agents: AgentRegistry

    async def on_request_decided(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RequestDecided]
    ) -> None:
        await create_grants(
            session=session,
            decided=event.payload,
            signer=self.signer,
            topics=self.topics,
            clock=self.clock,
        )

    async def on_approval_withdrawn(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.ApprovalWithdrawn]
    ) -> None:
        if await withdraw_approval(
            session=session, withdrawn=event.payload, topics=self.topics, clock=self.clock
        ):
            after_commit(session, self.timer.timers_changed)

    async def on_approval_shortened(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.ApprovalShortened]
    ) -> None:
        if await shorten_approval(
            session=session,
            shortened=event.payload,
            topics=self.topics,
            clock=self.clock,
            expiry_notice=self.expiry_notice,
        ):
            after_commit(session, self.timer.timers_changed)

    async def on_extension_approved(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.ExtensionApproved]
    ) -> None:
        if await extend_active_grant(
            session=session,
            extension=event.payload,
            topics=self.topics,
            clock=self.clock,
            expiry_notice=self.expiry_notice,
        ):
            after_commit(session, self.timer.timers_changed)

    async def on_agent_result(
        self,
        *,
        session: AsyncSession,
        event: DecodedEvent[events_pb2.SignedAgentReport | events_pb2.AgentResult],
    ) -> None:
        if _answers_no_grant_command(event.payload):
            return
        result = await self.agents.verify(event.payload, events_pb2.AgentResult)
        await refuse_replays(
            session, payload=event.payload, consumer="grant-scheduler-results", now=self.clock.now()
        )
        if await record_grant_result(
            session=session,
            result=result,
            topics=self.topics,
            clock=self.clock,
            expiry_notice=self.expiry_notice,
        ):
            after_commit(session, self.timer.timers_changed)

    async def on_end_requested(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.GrantEndRequested]
    ) -> None:
        await end_grant_early(
            session=session, requested=event.payload, topics=self.topics, clock=self.clock
        )


def _answers_no_grant_command(payload: Message) -> bool:
    """The scheduler acts only on answers to grant commands; half the results on the topic
    answer revokes. Reading the kind before the signature is safe because it is used only to
    skip: the revoker, which acts on revoke results, verifies (and refuses) them."""
    if not isinstance(payload, events_pb2.SignedAgentReport) or (
        payload.report_type != events_pb2.AgentResult.DESCRIPTOR.full_name
    ):
        return False
    result = events_pb2.AgentResult()
    try:
        result.ParseFromString(payload.report)
    except DecodeError:
        return False  # refused by the signature check, with the reason
    return result.kind != common_pb2.COMMAND_KIND_GRANT
