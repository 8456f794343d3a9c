"""Ed25519 signatures on what agents send (results, heartbeats): each agent signs with its
own enrolled key, and every service that acts on a report checks it against the agent
registry (lapse.agent-registry.v1) before anything else.

Agents run on networks Lapse does not control: a Kafka credential alone must not let
anyone speak for an agent, so a report counts only when the key the revoker enrolled for
that agent signed it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError, Message
from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_common.clock import Clock, as_utc
from lapse_common.field_bounds import OutOfBounds, screen
from lapse_common.key_ids import ed25519_key_id
from lapse_common.messaging.codec import UndecodableMessage, decode
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.messaging.inbox import first_delivery
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.settings import KafkaSettings

logger = logging.getLogger(__name__)
R = TypeVar("R", events_pb2.AgentResult, events_pb2.AgentHeartbeat)

_meter = metrics.get_meter("lapse.agent_reports")
_refused = _meter.create_counter(
    "lapse.agent_reports.refused",
    description="agent results and heartbeats refused: unsigned, unknown or disabled agent, "
    "wrong key, bad signature",
)
# Longer than any key, agent id and report Lapse sends: a bigger one is refused unread.
MAX_REPORT_BYTES = 64 * 1024
# How long a report waits for the registry to be read at start-up before it is redelivered.
REGISTRY_WAIT_SECONDS = 60


def _signed_bytes(agent_id: str, key_id: str, report_type: str, report: bytes) -> bytes:
    # Length-prefixed fields: no two different reports sign the same bytes.
    parts = [b"lapse.v1.SignedAgentReport", *(p.encode() for p in (agent_id, key_id, report_type))]
    return b"".join(len(p).to_bytes(4, "big") + p for p in [*parts, report])


class ReportSigner:
    """The agent's side: signs each report with the agent's private key."""

    def __init__(self, *, agent_id: str, private_key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("an agent's signing key must be an Ed25519 private key")
        self._key = key
        self.agent_id = agent_id
        self.key_id = key_id_of(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(
        self, report: events_pb2.AgentResult | events_pb2.AgentHeartbeat
    ) -> events_pb2.SignedAgentReport:
        body = report.SerializeToString(deterministic=True)
        report_type = report.DESCRIPTOR.full_name
        return events_pb2.SignedAgentReport(
            agent_id=self.agent_id,
            key_id=self.key_id,
            report_type=report_type,
            report=body,
            signature=self._key.sign(_signed_bytes(self.agent_id, self.key_id, report_type, body)),
        )


def key_id_of(public_key_pem: bytes) -> str:
    """A short, stable name for an agent's public key (see `lapse_common.key_ids`), so an
    agent and the registry agree which key signed without trusting a label."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("an agent's key must be an Ed25519 public key")
    return ed25519_key_id(key)


@dataclass(frozen=True)
class EnrolledKey:
    key_id: str
    key: Ed25519PublicKey


class AgentRegistry:
    """Every agent's current key, as the revoker published it on lapse.agent-registry.v1.
    `follow()` reads the topic from its beginning and keeps reading; `verify()` waits until
    the reader has caught up with what was there when it started."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topic: str,
        clock: Clock,
        heartbeat_max_age: timedelta = timedelta(seconds=60),
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._clock = clock
        self._heartbeat_max_age = heartbeat_max_age
        self._keys: dict[str, EnrolledKey] = {}
        self._disabled: set[str] = set()
        self._ready = asyncio.Event()

    @classmethod
    def of(
        cls, changes: list[events_pb2.AgentRegistrationChanged], *, clock: Clock
    ) -> AgentRegistry:
        """A registry that holds just these changes and follows nothing (tests, tools)."""
        registry = cls(kafka=KafkaSettings(), topic="", clock=clock)
        for change in changes:
            registry.apply(change)
        registry._ready.set()
        return registry

    def apply(self, change: events_pb2.AgentRegistrationChanged) -> None:
        if change.change == events_pb2.AGENT_REGISTRATION_CHANGE_DISABLED:
            self._keys.pop(change.agent_id, None)
            self._disabled.add(change.agent_id)
            return
        try:
            key = serialization.load_pem_public_key(change.public_key_pem.encode())
        except ValueError:
            logger.error("agent registry: unreadable key for agent %s ignored", change.agent_id)
            return
        if not isinstance(key, Ed25519PublicKey):
            logger.error("agent registry: non-Ed25519 key for agent %s ignored", change.agent_id)
            return
        self._disabled.discard(change.agent_id)
        self._keys[change.agent_id] = EnrolledKey(change.key_id, key)

    async def follow(self) -> None:
        """Run until cancelled: the registry topic from the beginning, then every change.
        A broken connection is retried (the keys read so far stay in force meanwhile)."""
        while True:
            try:
                await self._read_registry()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("agent registry: reading %s failed; retrying", self._topic)
                await asyncio.sleep(1.0)

    async def _read_registry(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **aiokafka_security_options(self._kafka),
        )
        await consumer.start()
        try:
            known = consumer.partitions_for_topic(self._topic)
            if not known:
                # A consumer without a subscription knows no topic's partitions until its
                # metadata is fetched (and the registry has several).
                await consumer._client.force_metadata_update()
                known = consumer.partitions_for_topic(self._topic)
            if not known:
                raise RuntimeError(f"the agent registry topic {self._topic} does not exist")
            partitions = [TopicPartition(self._topic, p) for p in sorted(known)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._apply_record(record.value or b"", record.offset)
                positions = [await consumer.position(tp) for tp in partitions]
                if not self._ready.is_set() and all(
                    at >= end[tp] for at, tp in zip(positions, partitions, strict=True)
                ):
                    logger.info("agent registry: %d enrolled agents", len(self._keys))
                    self._ready.set()
        finally:
            await consumer.stop()

    def _apply_record(self, value: bytes, offset: int) -> None:
        if len(value) > MAX_REPORT_BYTES:
            logger.error("agent registry: record at offset %d ignored: oversized", offset)
            return
        try:
            event = decode(value, expected=(events_pb2.AgentRegistrationChanged,))
        except UndecodableMessage as problem:
            logger.error("agent registry: record at offset %d ignored: %s", offset, problem.reason)
            return
        assert isinstance(event.payload, events_pb2.AgentRegistrationChanged)
        self.apply(event.payload)

    async def verify(self, payload: Message, kind: type[R]) -> R:
        """The report inside `payload` once its signature checks out; RefusedMessage (the
        consumer quarantines it with the reason) otherwise."""
        try:
            return self._verify(payload, kind)
        except RefusedMessage:
            if self._ready.is_set() or not isinstance(payload, events_pb2.SignedAgentReport):
                _refused.add(1, {"report": kind.DESCRIPTOR.name})
                raise
        # Signed, maybe by an agent enrolled in the part of the registry not read yet: wait
        # for the registry, then decide. If it cannot be read, the report is redelivered.
        try:
            await asyncio.wait_for(self._ready.wait(), REGISTRY_WAIT_SECONDS)
        except TimeoutError:
            raise RuntimeError(
                f"the agent registry ({self._topic}) was not read within "
                f"{REGISTRY_WAIT_SECONDS}s; cannot check a report yet"
            ) from None
        try:
            return self._verify(payload, kind)
        except RefusedMessage:
            _refused.add(1, {"report": kind.DESCRIPTOR.name})
            raise

    async def outcome(self, payload: Message) -> str:
        """What verification says of a report, as a sentence for the audit log (never
        raises): audit records every report, the refused ones with why."""
        name = (
            payload.report_type
            if isinstance(payload, events_pb2.SignedAgentReport)
            else payload.DESCRIPTOR.full_name
        )
        try:
            if name == events_pb2.AgentHeartbeat.DESCRIPTOR.full_name:
                await self.verify(payload, events_pb2.AgentHeartbeat)
            elif name == events_pb2.AgentResult.DESCRIPTOR.full_name:
                await self.verify(payload, events_pb2.AgentResult)
            else:
                return f"refused: a {name} is no agent report"
        except RefusedMessage as refusal:
            return f"refused: {refusal.reason}"
        assert isinstance(payload, events_pb2.SignedAgentReport)
        return f"verified: signed by agent {payload.agent_id} with enrolled key {payload.key_id}"

    def _verify(self, payload: Message, kind: type[R]) -> R:
        name = kind.DESCRIPTOR.full_name
        if not isinstance(payload, events_pb2.SignedAgentReport):
            raise RefusedMessage(f"unsigned {name}: agents must sign what they send")
        agent = payload.agent_id
        if len(payload.report) > MAX_REPORT_BYTES:
            raise RefusedMessage(f"{name} from agent {agent!r} is over {MAX_REPORT_BYTES} bytes")
        if payload.report_type != name:
            raise RefusedMessage(f"a signed {payload.report_type!r} where a {name} belongs")
        if agent in self._disabled:
            raise RefusedMessage(f"{name} from agent {agent!r}, which is disabled")
        enrolled = self._keys.get(agent)
        if enrolled is None:
            raise RefusedMessage(f"{name} from agent {agent!r}, which is not enrolled")
        if payload.key_id != enrolled.key_id:
            raise RefusedMessage(
                f"{name} from agent {agent!r} signed with key {payload.key_id!r}, but its "
                f"enrolled key is {enrolled.key_id!r}"
            )
        try:
            enrolled.key.verify(
                payload.signature, _signed_bytes(agent, payload.key_id, name, payload.report)
            )
        except InvalidSignature:
            raise RefusedMessage(
                f"{name} from agent {agent!r}: the signature does not verify with its enrolled key"
            ) from None
        report = kind()
        try:
            report.ParseFromString(payload.report)
        except DecodeError as error:
            raise RefusedMessage(
                f"signed {name} from agent {agent!r} does not parse: {error}"
            ) from error
        try:
            screen(report)
        except OutOfBounds as problem:
            raise RefusedMessage(f"signed {name} from agent {agent!r}: {problem}") from None
        if report.agent_id != agent:
            raise RefusedMessage(
                f"{name} signed by agent {agent!r} claims to come from agent {report.agent_id!r}"
            )
        if isinstance(report, events_pb2.AgentHeartbeat):
            # A replayed old heartbeat must not make a dead agent look alive.
            sent = as_utc(report.sent_at.ToDatetime())
            if self._clock.now() - sent > self._heartbeat_max_age:
                raise RefusedMessage(
                    f"heartbeat from agent {agent!r} sent at {sent.isoformat()} is older than "
                    f"{self._heartbeat_max_age.total_seconds():.0f}s (a replay, or a clock "
                    "far off)"
                )
        return report


async def refuse_replays(
    session: AsyncSession, *, payload: Message, consumer: str, now: datetime
) -> None:
    """Refuse a signed report this consumer already handled, even re-wrapped in a new
    envelope (a new event id gets past the inbox; the same signature does not). Recorded in
    the caller's transaction, like the inbox."""
    if not isinstance(payload, events_pb2.SignedAgentReport):
        return
    digest = hashlib.sha256(payload.signature).hexdigest()
    if not await first_delivery(session, consumer=f"{consumer}:reports", event_id=digest, now=now):
        raise RefusedMessage(
            f"replay: this signed {payload.report_type} from agent {payload.agent_id!r} was "
            "handled before"
        )
