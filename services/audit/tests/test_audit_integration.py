"""The audit service as a real process against real Kafka and PostgreSQL.

Isolated from other runs by a unique topic prefix and a fresh database (the service's
schema name is fixed to "audit", so a schema per run is not possible).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from lapse_audit.handlers import fixed_topic, recording_handler
from lapse_audit.models import AuditBase, AuditEventRecord
from lapse_audit.operations.verify_chain import verify_chain
from lapse_common.auth import ensure_keypair, mint_token
from lapse_common.clock import SystemClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.kafka_admin.provisioning import Installation
from lapse_common.messaging.codec import DecodedEvent, build_envelope
from lapse_common.messaging.inbox import first_delivery
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.pb.lapse.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    envelope_pb2,
    events_pb2,
)
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.engine import make_url

from services.audit.tests.audit_events import decoded, grant_fact, request_submitted, signed_command
from tests.grpc_tls import StackTls
from tests.infrastructure import provide_infrastructure
from tests.integration.kafka_records import read_all
from tests.integration.waiting import wait_for
from tests.kafka_principals import ADMIN, InstallationCredentials
from tests.stack import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENT_ID = "it-agent"
GARBAGE = b"\x08\x96\x01 this is not a lapse envelope"
T = TypeVar("T")


@dataclass(frozen=True)
class RunningAudit:
    # The super user: this module feeds audit every topic, as every producer at once.
    kafka: KafkaSettings
    topics: Topics
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub
    keys: Path
    process: ServiceProcess

    def bearer(self, *, roles: list[str]) -> list[tuple[str, str]]:
        return _bearer(self.keys, roles=roles)

    @property
    def auditor(self) -> list[tuple[str, str]]:
        return self.bearer(roles=["auditor"])


@pytest.fixture(scope="module")
async def audit(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningAudit]:
    """One audit process for the module: its ten consumers share one group, whose joins
    take about half a minute to settle."""
    tmp_path = tmp_path_factory.mktemp("audit")
    infra = await asyncio.to_thread(provide_infrastructure)
    run_id = uuid.uuid4().hex[:8]
    topics = Topics(prefix=f"it-audit-{run_id}.")
    _, public_key = ensure_keypair(tmp_path / "keys", "dev-token")
    checkpoint_key, _ = ensure_keypair(tmp_path / "keys", "audit-checkpoint")
    kafka = InstallationCredentials(
        admin=infra.kafka_admin,
        installation=Installation(topic_prefix=topics.prefix, agents=(AGENT_ID,)),
        credentials_dir=tmp_path / "kafka-credentials",
    )
    await kafka.provision()
    database_url = await _create_database(infra.database_url, f"lapse_audit_test_{run_id}")
    port = free_port()
    tls = StackTls.make(tmp_path / "tls")
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAPSE_")}
    env.update(
        {
            "LAPSE_KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "LAPSE_KAFKA_TOPIC_PREFIX": topics.prefix,
            **kafka.env("lapse-audit"),
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_AUTH_DEV_MODE": "true",
            "LAPSE_AUTH_PUBLIC_KEY_FILE": str(public_key),
            "LAPSE_AUDIT_GRPC_ADDRESS": f"127.0.0.1:{port}",
            **tls.env(),
            "LAPSE_AUDIT_CHECKPOINT_KEY_FILE": str(checkpoint_key),
            "LAPSE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        }
    )
    process = ServiceProcess("audit", "lapse_audit", env, tmp_path)
    process.start()
    channel = tls.aio_channel(port)
    try:
        await asyncio.to_thread(process.wait_ready)
        yield RunningAudit(
            kafka=kafka.settings(ADMIN),
            topics=topics,
            stub=audit_service_pb2_grpc.AuditServiceStub(channel),  # type: ignore[arg-type]
            keys=tmp_path / "keys",
            process=process,
        )
    except BaseException:
        print(process.tail(120))
        raise
    finally:
        await channel.close()
        await asyncio.to_thread(process.stop)
        await kafka.delete_topics()
        await _drop_database(infra.database_url, make_url(database_url).database or "")


async def test_every_event_is_stored_once_garbage_is_quarantined_and_the_chain_verifies(
    audit: RunningAudit,
) -> None:
    topics = audit.topics
    submitted = _envelope(request_submitted("r-1"), request_id="r-1")
    granted = _envelope(grant_fact("g-1", "r-1"), request_id="r-1", grant_id="g-1")
    command = _envelope(signed_command("g-1", AGENT_ID), grant_id="g-1")
    canceled = _envelope(
        events_pb2.RequestCanceled(request_id="r-1", canceled_by="alice"), request_id="r-1"
    )
    await _publish(
        audit.kafka,
        [
            (topics.requests, b"r-1", submitted),
            # The outbox relay is at-least-once: the same event may arrive twice.
            (topics.requests, b"r-1", submitted),
            (topics.grants, b"g-1", granted),
            (topics.agent_commands(AGENT_ID), b"g-1", command),
            (topics.grants, b"g-bad", GARBAGE),
            # Same key and partition as the duplicate, so once this one is stored the
            # duplicate has certainly been handled too.
            (topics.requests, b"r-1", canceled),
        ],
    )

    async def all_five() -> list[audit_service_pb2.AuditEvent] | None:
        response = await audit.stub.ListEvents(
            audit_service_pb2.ListAuditEventsRequest(), metadata=audit.auditor
        )
        events = list(response.events)
        stored = {event.event_id for event in events}
        wanted = {submitted.event_id, granted.event_id, command.event_id, canceled.event_id}
        quarantined = [e for e in events if e.type == "lapse.v1.QuarantinedMessage"]
        return events if wanted <= stored and quarantined else None

    events = await _eventually(all_five, process=audit.process)

    assert len(events) == 5, [(e.sequence, e.type, e.topic) for e in events]
    assert len({event.event_id for event in events}) == 5
    assert [event.sequence for event in events] == [1, 2, 3, 4, 5]
    by_id = {event.event_id: event for event in events}
    assert by_id[submitted.event_id].topic == topics.requests
    assert by_id[granted.event_id].topic == topics.grants
    assert by_id[granted.event_id].grant_id == "g-1"
    assert by_id[command.event_id].topic == topics.agent_commands(AGENT_ID)
    assert '"decoded_command"' in by_id[command.event_id].payload_json
    [quarantine_row] = [e for e in events if e.type == "lapse.v1.QuarantinedMessage"]
    assert quarantine_row.topic == topics.quarantine
    assert quarantine_row.producer == "audit"

    on_quarantine = [
        events_pb2.QuarantinedMessage.FromString(
            envelope_pb2.Envelope.FromString(record.value).payload
        )
        for record in await read_all(audit.kafka, topics.quarantine)
    ]
    assert [(q.source_topic, q.key, q.value, q.consumer) for q in on_quarantine] == [
        (topics.grants, b"g-bad", GARBAGE, "audit")
    ]
    assert on_quarantine[0].reason.startswith("not a lapse.v1.Envelope")

    by_request = await audit.stub.ListEvents(
        audit_service_pb2.ListAuditEventsRequest(request_id="r-1"), metadata=audit.auditor
    )
    assert {e.event_id for e in by_request.events} == {
        submitted.event_id,
        granted.event_id,
        canceled.event_id,
    }

    verification = await audit.stub.VerifyChain(
        audit_service_pb2.VerifyChainRequest(), metadata=audit.auditor
    )
    assert verification.ok, verification.detail
    assert verification.events_checked == 5


async def test_queries_need_a_token_and_an_oversight_role(audit: RunningAudit) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await audit.stub.ListEvents(audit_service_pb2.ListAuditEventsRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.aio.AioRpcError) as plain_user:
        await audit.stub.VerifyChain(
            audit_service_pb2.VerifyChainRequest(), metadata=audit.bearer(roles=[])
        )
    assert plain_user.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_concurrent_appends_on_postgresql_form_one_chain() -> None:
    """Many transactions at once (as several partitions and replicas would) serialize on
    the chain head row lock into one gapless chain, each event once."""
    infra = await asyncio.to_thread(provide_infrastructure)
    database_url = await _create_database(
        infra.database_url, f"lapse_audit_test_{uuid.uuid4().hex[:8]}"
    )
    engine = create_engine_for_service(database_url, schema="audit")
    try:
        await create_schema(engine, schema="audit", metadatas=[Base.metadata, AuditBase.metadata])
        sessions = session_factory(engine)
        events = [decoded(grant_fact(f"g-{index}", "r-1")) for index in range(30)]
        handler = recording_handler(topic_of=fixed_topic("lapse.grants.v1"), clock=SystemClock())

        async def deliver(event: DecodedEvent) -> None:
            async with sessions() as session, session.begin():
                now = SystemClock().now()
                if await first_delivery(
                    session, consumer="audit", event_id=event.event_id, now=now
                ):
                    await handler(session=session, event=event)

        # Every event twice, all at once: redeliveries race their first delivery.
        await asyncio.gather(*(deliver(event) for event in events + events))

        async with sessions() as session:
            rows = (
                await session.scalars(select(AuditEventRecord).order_by(AuditEventRecord.sequence))
            ).all()
            verification = await verify_chain(session)
        assert [row.sequence for row in rows] == list(range(1, 31))
        assert {row.event_id for row in rows} == {event.event_id for event in events}
        assert verification.ok, verification.detail
    finally:
        await engine.dispose()
        await _drop_database(infra.database_url, make_url(database_url).database or "")


def _bearer(keys: Path, *, roles: list[str]) -> list[tuple[str, str]]:
    private_key, _ = ensure_keypair(keys, "dev-token")
    token = mint_token(
        private_key_pem=private_key.read_bytes(),
        subject="it-user",
        groups=[],
        roles=roles,
        ttl_seconds=600,
    )
    return [("authorization", f"Bearer {token}")]


def _envelope(payload: Message, **fields: str) -> envelope_pb2.Envelope:
    return build_envelope(
        payload,
        producer="integration-test",
        occurred_at=SystemClock().now(),
        **fields,
    )


async def _publish(
    kafka: KafkaSettings, records: list[tuple[str, bytes, envelope_pb2.Envelope | bytes]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        **aiokafka_security_options(kafka),
    )
    await producer.start()
    try:
        for topic, key, value in records:
            raw = value if isinstance(value, bytes) else value.SerializeToString(deterministic=True)
            await producer.send_and_wait(topic, value=raw, key=key)
    finally:
        await producer.stop()


async def _eventually(probe: Callable[[], Awaitable[T | None]], *, process: ServiceProcess) -> T:
    """The probe's first answer; waits while the audit log keeps growing."""
    found = await wait_for(
        probe,
        lambda result: result is not None,
        what="audit to store every event",
        progress=lambda _: process.log_path.stat().st_size if process.log_path.exists() else 0,
        describe=lambda _: f"audit log:\n{process.tail(80)}",
        interval=0.5,
    )
    assert found is not None
    return found


async def _create_database(base_url: str, name: str) -> str:
    url = make_url(base_url)
    admin = await asyncpg.connect(_plain_dsn(base_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_database(base_url: str, name: str) -> None:
    admin = await asyncpg.connect(_plain_dsn(base_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
