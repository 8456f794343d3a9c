"""Kafka entry point for the agent's command topic: decode a batch, hand it over, publish
the results, commit the offsets.

The agent has no SQL database, so it cannot use lapse_common's transactional
`subscribe_events`; the ordering guarantee is the same: a partition's offsets are committed
only after the ledger is written and every result of the batch is acknowledged by Kafka.
If anything before that fails, each partition is read again from the batch's first record,
and the ledger answers what already ran with its first result instead of running it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock
from lapse_common.command_signing import CommandVerifier
from lapse_common.messaging.batch_handling import (
    Offsets,
    Record,
    UncommittedOffsets,
    commit_offsets,
    continued_trace,
)
from lapse_common.messaging.broker import batch_consumer_options
from lapse_common.messaging.codec import UndecodableMessage, decode
from lapse_common.messaging.publishing import PipelinedPublisher
from lapse_common.pb.lapse.v1 import commands_pb2
from lapse_common.topics import Topics

from lapse_agent.connectors.base import Connector
from lapse_agent.ledger import CommandLedger
from lapse_agent.operations.receive_command import receive_commands
from lapse_agent.operations.report_results import ResultToReport, report_results
from lapse_agent.principal_rules import PrincipalRules

logger = logging.getLogger(__name__)

# Back-off before a failed batch is read again, so a Kafka hiccup is not a hot loop.
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
    # Per integration id: how many of its commands may run at once.
    limits: Mapping[str, asyncio.Semaphore]
    ledger: CommandLedger
    publisher: PipelinedPublisher
    signer: ReportSigner
    clock: Clock
    # Records taken from the command topic at once (KafkaSettings.consumer_batch_size).
    batch_size: int
    # Static group membership: a restarted agent resumes its partitions without a rebalance.
    instance_id: str = ""

    @property
    def consumer(self) -> str:
        return f"{self.topics.prefix}lapse-agent-{self.agent_id}"

    async def handle(self, records: Sequence[Record], *, offsets: Offsets) -> None:
        commands = [received for record in records if (received := _command(record)) is not None]
        try:
            results = await receive_commands(
                payloads=[received.payload for received in commands],
                agent_id=self.agent_id,
                verifier=self.verifier,
                connectors=self.connectors,
                principal_rules=self.principal_rules,
                limits=self.limits,
                ledger=self.ledger,
                clock=self.clock,
            )
            await report_results(
                results=[
                    ResultToReport(
                        result=result,
                        request_id=received.request_id,
                        trace=continued_trace(received.record),
                    )
                    for received, result in zip(commands, results, strict=True)
                ],
                publisher=self.publisher,
                topic=self.topics.agent_results,
                signer=self.signer,
                clock=self.clock,
            )
        except Exception:
            logger.exception(
                "batch of %d command record(s) failed; it will be read again", len(records)
            )
            for partition, first_offset in _first_offsets(records).items():
                offsets.seek(partition, first_offset)
            await asyncio.sleep(REDELIVERY_PAUSE_SECONDS)
            return
        await commit_offsets(offsets, _next_offsets(records), consumer=self.consumer)


@dataclass(frozen=True)
class _ReceivedCommand:
    record: Record
    payload: commands_pb2.SignedCommand | commands_pb2.AgentCommand
    request_id: str


def _command(record: Record) -> _ReceivedCommand | None:
    """The record's command, or None for what is not a Lapse command envelope: logged and
    skipped, since an agent may write only results and heartbeats (the quarantine is not its
    to write), and audit, which reads every command topic, quarantines it with the reason."""
    try:
        event = decode(
            record.value or b"", expected=(commands_pb2.SignedCommand, commands_pb2.AgentCommand)
        )
    except UndecodableMessage as problem:
        logger.warning(
            "skipped undecodable record %s[%s]@%s: %s",
            record.topic,
            record.partition,
            record.offset,
            problem.reason,
        )
        return None
    assert isinstance(event.payload, commands_pb2.SignedCommand | commands_pb2.AgentCommand)
    return _ReceivedCommand(
        record=record, payload=event.payload, request_id=event.envelope.request_id
    )


def _first_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    return first


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {
        TopicPartition(record.topic, record.partition): OffsetAndMetadata(record.offset + 1, "")
        for record in records
    }


def subscribe_commands(broker: KafkaBroker, handling: CommandHandling) -> None:
    # The bodies are taken raw from the records: FastStream must not try to parse them.
    async def on_batch(message: KafkaMessage) -> None:
        records = message.raw_message
        # A tuple from Kafka; the in-memory test broker hands over a list.
        batch = tuple(records) if isinstance(records, tuple | list) else (records,)
        consumer = message.consumer
        offsets = consumer if isinstance(consumer, AIOKafkaConsumer) else UncommittedOffsets()
        await handling.handle(batch, offsets=offsets)

    options = batch_consumer_options(
        group_id=handling.consumer,
        instance_id=handling.instance_id,
        batch_size=handling.batch_size,
    )
    broker.subscriber(handling.topics.agent_commands(handling.agent_id), **options)(on_batch)
