"""The audit consumers as wired in app.py, driven through FastStream's in-memory broker:
every topic is consumed, duplicates are dropped, garbage is quarantined and audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker
from lapse_audit.app import subscribe_audit_consumers
from lapse_audit.models import AuditBase, AuditEventRecord
from lapse_audit.operations.verify_chain import verify_chain
from lapse_common.pb.lapse.v1 import envelope_pb2, events_pb2
from lapse_common.runtime import Service
from lapse_common.settings import KafkaSettings
from sqlalchemy import select

from services.audit.tests.audit_events import (
    grant_fact,
    request_submitted,
    signed_command,
    wire_bytes,
)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    service = await Service.create(
        name="audit",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/lapse.db",
        metadatas=[AuditBase.metadata],
        # TestKafkaBroker-style wiring: nothing connects, so no credential is involved.
        kafka=KafkaSettings(
            topic_prefix="unit.", security_protocol="PLAINTEXT", allow_plaintext=True
        ),
    )
    subscribe_audit_consumers(service)
    yield service
    await service.engine.dispose()


async def recorded(service: Service) -> list[AuditEventRecord]:
    async with service.sessions() as session:
        query = select(AuditEventRecord).order_by(AuditEventRecord.sequence)
        return list((await session.scalars(query)).all())


async def test_every_topic_is_recorded_once_with_its_name(service: Service) -> None:
    topics = service.topics
    submitted = wire_bytes(request_submitted("r-1"), request_id="r-1")
    deliveries = [
        (topics.requests, submitted),
        (topics.requests, submitted),  # the relay is at-least-once
        (topics.grants, wire_bytes(grant_fact("g-1", "r-1"), grant_id="g-1")),
        (topics.agent_commands("pg-agent-1"), wire_bytes(signed_command("g-1", "pg-agent-1"))),
        *[
            (topic, wire_bytes(events_pb2.AgentHeartbeat(agent_id="a")))
            for topic in topics.shared()
            if topic not in (topics.requests, topics.grants)
        ],
    ]

    async with TestKafkaBroker(service.broker) as broker:
        for topic, value in deliveries:
            await broker.publish(value, topic, key=b"k")

    rows = await recorded(service)
    by_topic = sorted(row.topic for row in rows)
    assert by_topic == sorted(
        [topics.requests, topics.grants, topics.agent_commands("pg-agent-1")]
        + [topic for topic in topics.shared() if topic not in (topics.requests, topics.grants)]
    )
    async with service.sessions() as session:
        assert (await verify_chain(session)).ok


async def test_garbage_is_quarantined_and_the_quarantine_is_audited(service: Service) -> None:
    async with TestKafkaBroker(service.broker) as broker:
        await broker.publish(b"\x00 definitely not protobuf", service.topics.grants, key=b"g-9")

    [row] = await recorded(service)
    assert row.type == "lapse.v1.QuarantinedMessage"
    assert row.topic == service.topics.quarantine
    assert row.producer == "audit"
    quarantined = events_pb2.QuarantinedMessage()
    quarantined.ParseFromString(envelope_pb2.Envelope.FromString(row.payload).payload)
    assert quarantined.source_topic == service.topics.grants
    assert quarantined.value == b"\x00 definitely not protobuf"
    assert quarantined.consumer == "audit"


async def test_an_event_id_too_long_for_the_inbox_is_quarantined(service: Service) -> None:
    """On PostgreSQL such an id would fail the inbox insert on every redelivery."""
    overlong = wire_bytes(request_submitted("r-1"), event_id="e" * 65)

    async with TestKafkaBroker(service.broker) as broker:
        await broker.publish(overlong, service.topics.requests, key=b"r-1")

    [row] = await recorded(service)
    assert row.type == "lapse.v1.QuarantinedMessage"
    quarantined = events_pb2.QuarantinedMessage.FromString(
        envelope_pb2.Envelope.FromString(row.payload).payload
    )
    assert "event_id is 65 characters long" in quarantined.reason
