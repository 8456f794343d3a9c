"""Reading and writing raw Kafka records in tests (what an operator's tools would see), as
the principal whose settings are passed: the super user to observe, an agent's or a
producer's credential to act as that party (or as an attacker holding it)."""

from __future__ import annotations

import uuid
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from google.protobuf.message import Message
from lapse_common.messaging.codec import decode
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.settings import KafkaSettings

from tests.integration.waiting import ProgressWatch, Stalled

M = TypeVar("M", bound=Message)
R = TypeVar("R", events_pb2.AgentResult, events_pb2.AgentHeartbeat)


def agent_report(payload: Message, kind: type[R]) -> R | None:
    """The `kind` report an agent signed (read, not verified: the services verify), or None
    if the payload holds something else."""
    if not isinstance(payload, events_pb2.SignedAgentReport):
        return None
    if payload.report_type != kind.DESCRIPTOR.full_name:
        return None
    return kind.FromString(payload.report)


async def read_all(kafka: KafkaSettings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently on the topic, from the beginning: read up to the end offsets
    it had when asked, however long a loaded machine takes, and never a silent part of it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        **aiokafka_security_options(kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assignment)
        await consumer.seek_to_beginning(*assignment)
        end = await consumer.end_offsets(assignment)
        records: list[ConsumerRecord[bytes, bytes]] = []
        watch = ProgressWatch()
        while True:
            positions = {tp: await consumer.position(tp) for tp in assignment}
            if all(positions[tp] >= end[tp] for tp in assignment):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
            watch.observe(sum(positions.values()))
            why = watch.exhausted()
            if why is not None:
                raise Stalled(f"reading {topic} to its end offsets {end}: {why}; at {positions}")
        return records
    finally:
        await consumer.stop()


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        **aiokafka_security_options(kafka),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()
        ]
        offsets = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def publish_raw(
    kafka: KafkaSettings,
    topic: str,
    *,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        **aiokafka_security_options(kafka),
        enable_idempotence=True,
        acks="all",
        client_id=f"test-{uuid.uuid4().hex[:6]}",
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


async def read_payloads(kafka: KafkaSettings, topic: str, kind: type[M]) -> list[M]:
    """The payloads of every Lapse envelope on the topic, each checked to be a `kind`."""
    payloads = []
    for record in await read_all(kafka, topic):
        payload = decode(record.value).payload
        assert isinstance(payload, kind), f"{topic} carries a {type(payload).__name__}"
        payloads.append(payload)
    return payloads
