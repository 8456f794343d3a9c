"""The agent's batch handler: offsets are committed only once every result of the batch is
acknowledged; if publishing fails, each partition is read again from the batch's first
record and what already ran is answered from the ledger, not run again. The agent process
against real Kafka and PostgreSQL is covered in tests/integration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_agent.handlers import CommandHandling
from lapse_agent.ledger import CommandLedger
from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.messaging.codec import build_envelope, decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics

from services.agent.tests.agent_commands import AGENT_ID, INTEGRATION_ID, CommandFactory
from services.agent.tests.in_memory_connector import InMemoryConnector

TOPICS = Topics(prefix="")


class FlakyResultsTopic:
    """Kafka's results topic as the agent's publisher sees it; the first `failures` records
    handed over are never acknowledged."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.results: list[events_pb2.AgentResult] = []

    async def publish(self, *, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        await (await self.send(topic=topic, key=key, value=value, headers=headers))

    async def send(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> Awaitable[object]:
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            delivery.set_exception(ConnectionError("broker not reachable"))
            return delivery
        report = decode(value).payload
        assert isinstance(report, events_pb2.SignedAgentReport)
        result = events_pb2.AgentResult()
        result.ParseFromString(report.report)
        self.results.append(result)
        delivery.set_result(None)
        return delivery


class RecordingOffsets:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


def command_record(value: bytes, *, partition: int, offset: int) -> Any:
    return ConsumerRecord(
        topic=TOPICS.agent_commands(AGENT_ID),
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"grant",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value),
        headers=[],
    )


def agent_signer() -> ReportSigner:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ReportSigner(agent_id=AGENT_ID, private_key_pem=pem)


async def test_a_failed_publish_reads_the_batch_again_without_running_it_again(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr("lapse_agent.handlers.REDELIVERY_PAUSE_SECONDS", 0)
    target = InMemoryConnector()
    results_topic = FlakyResultsTopic(failures=1)
    handling = CommandHandling(
        agent_id=AGENT_ID,
        topics=TOPICS,
        verifier=verifier,
        connectors={INTEGRATION_ID: target},
        principal_rules={},
        limits={INTEGRATION_ID: asyncio.Semaphore(4)},
        ledger=ledger,
        publisher=results_topic,
        signer=agent_signer(),
        clock=clock,
        batch_size=50,
    )
    commands = [
        make_command(kind=common_pb2.COMMAND_KIND_GRANT, grant_id=f"g-{n}", principal=f"u{n}")
        for n in range(4)
    ]
    values = [
        build_envelope(
            signer.sign(command), producer="test", occurred_at=clock.now()
        ).SerializeToString()
        for command in commands
    ]
    batch = [
        command_record(values[0], partition=0, offset=10),
        command_record(values[1], partition=1, offset=20),
        command_record(b"\x00not an envelope", partition=0, offset=11),
        command_record(values[2], partition=0, offset=12),
        command_record(values[3], partition=1, offset=21),
    ]
    offsets = RecordingOffsets()

    await handling.handle(batch, offsets=offsets)
    assert offsets.commits == []
    assert sorted(offsets.seeks) == [
        (TopicPartition(TOPICS.agent_commands(AGENT_ID), 0), 10),
        (TopicPartition(TOPICS.agent_commands(AGENT_ID), 1), 20),
    ]
    assert target.calls == ["grant"] * 4

    await handling.handle(batch, offsets=offsets)
    assert target.calls == ["grant"] * 4, "a command that ran was run again on redelivery"
    assert offsets.commits == [
        {
            TopicPartition(TOPICS.agent_commands(AGENT_ID), 0): 13,
            TopicPartition(TOPICS.agent_commands(AGENT_ID), 1): 22,
        }
    ]
    # The first attempt's other results reached Kafka too (the platform drops repeats by
    # command id); the second attempt answers all four, in offset order, from the ledger.
    first_attempt, second_attempt = results_topic.results[:3], results_topic.results[3:]
    assert [result.command_id for result in first_attempt] == [
        commands[n].command_id for n in (1, 2, 3)
    ]
    assert [result.command_id for result in second_attempt] == [
        commands[n].command_id for n in (0, 1, 2, 3)
    ]
    assert all(result.detail.startswith("duplicate delivery") for result in second_attempt)
    assert {access.principal for access in target.held} == {"u0", "u1", "u2", "u3"}
