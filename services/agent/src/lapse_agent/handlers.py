"""Kafka entry point for the agent's command topic: decode, hand over, publish.

The agent has no SQL database, so it cannot use lapse_common's transactional
`subscribe_events`; the ordering guarantee is the same: the offset commits only after
the ledger is written and the result is acknowledged by Kafka. Any exception before
that makes FastStream seek back, and the record is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock
from lapse_common.command_signing import CommandVerifier
from lapse_common.messaging.broker import consumer_options
from lapse_common.messaging.codec import UndecodableMessage, decode
from lapse_common.messaging.publishing import Publisher
from lapse_common.pb.lapse.v1 import commands_pb2
from lapse_common.topics import Topics

from lapse_agent.connectors.base import Connector
from lapse_agent.ledger import CommandLedger
from lapse_agent.operations.receive_command import receive_command
from lapse_agent.operations.report_result import report_result
from lapse_agent.principal_rules import PrincipalRules

logger = logging.getLogger(__name__)

# Back-off before a failed record is redelivered, so a Kafka hiccup is not a hot loop.
REDELIVERY_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class CommandHandling:
    """Everything the command handler needs, built once by the app."""

    agent_id: str
    topics: Topics
    verifier: CommandVerifier
    connectors: Mapping[str, Connector]
    # Per integration id: who may be granted to or revoked from (lapse_agent.principal_rules).
    principal_rules: Mapping[str, PrincipalRules]
    ledger: CommandLedger
    publisher: Publisher
    signer: ReportSigner
    clock: Clock
    # Static group membership: a restarted agent resumes its partitions without a rebalance.
    instance_id: str = ""

    @property
    def consumer(self) -> str:
        return f"{self.topics.prefix}lapse-agent-{self.agent_id}"


def subscribe_commands(broker: KafkaBroker, handling: CommandHandling) -> None:
    # The body is taken raw: FastStream must not try to parse it. What is not a Lapse
    # envelope is logged and skipped: an agent may write only results and heartbeats (the
    # quarantine is not its to write), and audit, which reads every command topic,
    # quarantines it with the reason.
    async def on_command(message: KafkaMessage) -> None:
        try:
            event = decode(
                message.body,
                expected=(commands_pb2.SignedCommand, commands_pb2.AgentCommand),
            )
        except UndecodableMessage as problem:
            record = message.raw_message
            assert not isinstance(record, tuple), "read one record at a time"
            logger.warning(
                "skipped undecodable record %s[%s]@%s: %s",
                record.topic,
                record.partition,
                record.offset,
                problem.reason,
            )
            return
        assert isinstance(event.payload, commands_pb2.SignedCommand | commands_pb2.AgentCommand)
        try:
            result = await receive_command(
                payload=event.payload,
                agent_id=handling.agent_id,
                verifier=handling.verifier,
                connectors=handling.connectors,
                principal_rules=handling.principal_rules,
                ledger=handling.ledger,
                clock=handling.clock,
            )
            await report_result(
                result=result,
                publisher=handling.publisher,
                topic=handling.topics.agent_results,
                signer=handling.signer,
                clock=handling.clock,
                request_id=event.envelope.request_id,
            )
        except Exception:
            logger.exception("command event %s failed; will be redelivered", event.event_id)
            await asyncio.sleep(REDELIVERY_PAUSE_SECONDS)
            raise

    options = consumer_options(group_id=handling.consumer, instance_id=handling.instance_id)
    broker.subscriber(handling.topics.agent_commands(handling.agent_id), **options)(on_command)
