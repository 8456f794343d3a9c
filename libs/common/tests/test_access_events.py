"""Access events: the producer registry, signing and verification, the publisher, keygen,
and the consumer's quarantine path for messages a handler refuses."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from lapse_common.access_events import (
    AccessEventPayload,
    AccessEventPublisher,
    AccessEventRefused,
    AccessEventSigner,
    AccessEventVerifier,
    AccessRequested,
    IncidentDeclared,
    IncidentResolved,
    ProducerRegistry,
    ProducerRegistryError,
    UserOffboarded,
)
from lapse_common.access_events.__main__ import build_payload, parse_args
from lapse_common.access_events.__main__ import main as access_events_cli
from lapse_common.access_events.keys import generate_producer_keys, load_private_key
from lapse_common.access_events.kinds import wrap
from lapse_common.clock import ManualClock, SystemClock
from lapse_common.db import Base
from lapse_common.kafka_admin.provisioning import Installation
from lapse_common.messaging.broker import create_broker
from lapse_common.messaging.codec import DecodedEvent, build_envelope, decode
from lapse_common.messaging.consumer import subscribe_events
from lapse_common.messaging.inbox import InboxRecord
from lapse_common.messaging.outbox import OutboxMessage, enqueue
from lapse_common.messaging.payload_routes import on
from lapse_common.messaging.publishing import BrokerPublisher
from lapse_common.messaging.quarantine import Quarantine
from lapse_common.pb.lapse.v1 import access_events_pb2, common_pb2, envelope_pb2, events_pb2
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.kafka_records import read_all
from tests.kafka_principals import ADMIN, provisioned

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PRODUCERS = ("hr-offboarding", "incident-bot", "ci-pipelines")
REGISTRY_YAML = """\
producers:
  hr-offboarding:
    public_key_file: keys/hr-offboarding.pub
    events: [user_offboarded]
  incident-bot:
    public_key_file: keys/incident-bot.pub
    events: [incident_declared, incident_resolved]
  ci-pipelines:
    public_key_file: keys/ci-pipelines.pub
    events: [access_requested]
    machine_identities: [ci-deploy]
"""


@dataclass(frozen=True)
class Setup:
    directory: Path
    registry: ProducerRegistry
    clock: ManualClock
    verifier: AccessEventVerifier
    signers: dict[str, AccessEventSigner]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    clock = ManualClock(NOW)
    signers = {}
    for producer in PRODUCERS:
        keys = generate_producer_keys(producer, tmp_path / "keys")
        signers[producer] = AccessEventSigner(
            producer=producer, private_key_pem=keys.private_key_file.read_bytes(), clock=clock
        )
    (tmp_path / "registry.yaml").write_text(REGISTRY_YAML)
    registry = ProducerRegistry.load(tmp_path / "registry.yaml")
    verifier = AccessEventVerifier(registry=registry, clock=clock, max_age=timedelta(minutes=10))
    return Setup(tmp_path, registry, clock, verifier, signers)


SCOPE = common_pb2.AccessScope(integration_id="pg-prod")
GOOD: dict[str, AccessEventPayload] = {
    "hr-offboarding": UserOffboarded(subject="bob", reason="left"),
    "incident-bot": IncidentDeclared(incident_id="inc-1", scope=SCOPE, lockdown=True),
    "ci-pipelines": AccessRequested(
        machine_identity="ci-deploy",
        integration_id="pg-prod",
        resource="orders",
        permission="write",
        principal="deployer",
        duration_seconds=600,
    ),
}


@pytest.mark.parametrize(
    ("producer", "payload", "kind"),
    [
        ("hr-offboarding", UserOffboarded(subject="bob", reason="left"), "user_offboarded"),
        ("incident-bot", IncidentDeclared(incident_id="inc-1", scope=SCOPE), "incident_declared"),
        (
            "incident-bot",
            IncidentDeclared(incident_id="inc-2", scope=common_pb2.AccessScope(everything=True)),
            "incident_declared",
        ),
        ("incident-bot", IncidentResolved(incident_id="inc-1"), "incident_resolved"),
        ("ci-pipelines", GOOD["ci-pipelines"], "access_requested"),
    ],
)
def test_a_registered_producers_event_verifies(
    setup: Setup, producer: str, payload: AccessRequested, kind: str
) -> None:
    signer = setup.signers[producer]
    event = signer.event(payload)
    setup.clock.advance(timedelta(minutes=9))

    verified = setup.verifier.verify(signer.sign(event))

    assert verified == event
    assert verified.producer == producer
    assert verified.WhichOneof("kind") == kind
    assert getattr(verified, kind) == payload


def _event(
    producer: str, payload: AccessEventPayload | None, *, issued_at: datetime | None = NOW
) -> access_events_pb2.AccessEvent:
    """An event built by hand, so tests can make it wrong in ways a signer never would."""
    event = access_events_pb2.AccessEvent(event_id=str(uuid.uuid4()), producer=producer)
    if issued_at is not None:
        event.issued_at.FromDatetime(issued_at)
    if payload is not None:
        wrap(event, payload)
    return event


def _signed(
    setup: Setup, producer: str, event: access_events_pb2.AccessEvent
) -> access_events_pb2.SignedAccessEvent:
    return setup.signers[producer].sign(event)


def _unsigned(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    signed = _signed(setup, "hr-offboarding", _event("hr-offboarding", GOOD["hr-offboarding"]))
    signed.signature = b""
    return signed


def _unknown_key_id(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    signed = _signed(setup, "hr-offboarding", _event("hr-offboarding", GOOD["hr-offboarding"]))
    signed.key_id = "payroll"
    return signed


def _tampered(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    signed = _signed(setup, "hr-offboarding", _event("hr-offboarding", GOOD["hr-offboarding"]))
    signed.event = _event("hr-offboarding", UserOffboarded(subject="alice")).SerializeToString()
    return signed


def _signed_by_another_key(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    signed = _signed(setup, "incident-bot", _event("hr-offboarding", GOOD["hr-offboarding"]))
    signed.key_id = "hr-offboarding"
    return signed


def _not_an_access_event(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    body = b"\xff\xff\xff\xff"
    key = load_private_key((setup.directory / "keys" / "hr-offboarding.key").read_bytes())
    return access_events_pb2.SignedAccessEvent(
        event=body, signature=key.sign(body), key_id="hr-offboarding"
    )


Mutation = Callable[[Setup], access_events_pb2.SignedAccessEvent]


def _case(producer: str, payload: AccessEventPayload | None, **kwargs: datetime | None) -> Mutation:
    return lambda setup: _signed(setup, producer, _event(producer, payload, **kwargs))


def _claims(claimed: str, *, signed_by: str) -> Mutation:
    return lambda setup: _signed(setup, signed_by, _event(claimed, GOOD[claimed]))


def _without_event_id(setup: Setup) -> access_events_pb2.SignedAccessEvent:
    event = _event("hr-offboarding", GOOD["hr-offboarding"])
    event.event_id = ""
    return _signed(setup, "hr-offboarding", event)


def _requested(**fields: object) -> AccessRequested:
    payload = AccessRequested()
    payload.CopyFrom(GOOD["ci-pipelines"])
    for name, value in fields.items():
        setattr(payload, name, value)
    return payload


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(_unsigned, "access event is not signed", id="not-signed"),
        pytest.param(_unknown_key_id, "unknown producer key id 'payroll'", id="unknown-key-id"),
        pytest.param(
            _tampered,
            "signature does not verify with the key of producer 'hr-offboarding'",
            id="tampered",
        ),
        pytest.param(_signed_by_another_key, "signature does not verify", id="wrong-key"),
        pytest.param(
            _not_an_access_event, "signed bytes are not an AccessEvent", id="not-an-access-event"
        ),
        pytest.param(
            _claims("hr-offboarding", signed_by="incident-bot"),
            "event claims producer 'hr-offboarding' but is signed with key 'incident-bot'",
            id="producer-mismatch",
        ),
        pytest.param(
            _without_event_id, "event_id must be 1-64 characters, got 0", id="no-event-id"
        ),
        pytest.param(_case("hr-offboarding", None), "access event has no kind set", id="no-kind"),
        pytest.param(
            _case("hr-offboarding", IncidentDeclared(incident_id="i", scope=SCOPE)),
            "producer 'hr-offboarding' may not send incident_declared",
            id="kind-not-allowed",
        ),
        pytest.param(
            _case("incident-bot", UserOffboarded(subject="bob")),
            "producer 'incident-bot' may not send user_offboarded",
            id="kind-not-allowed-2",
        ),
        pytest.param(
            _case("ci-pipelines", _requested(machine_identity="prod-admin")),
            "producer 'ci-pipelines' may not request access as machine identity 'prod-admin'",
            id="machine-identity-not-allowed",
        ),
        pytest.param(
            _case("hr-offboarding", GOOD["hr-offboarding"], issued_at=None),
            "access event has no issued_at",
            id="no-issued-at",
        ),
        pytest.param(
            _case(
                "hr-offboarding",
                GOOD["hr-offboarding"],
                issued_at=NOW - timedelta(minutes=10, seconds=1),
            ),
            "is older than 0:10:00",
            id="too-old",
        ),
        pytest.param(
            _case("hr-offboarding", GOOD["hr-offboarding"], issued_at=NOW + timedelta(minutes=2)),
            "is in the future",
            id="from-the-future",
        ),
        pytest.param(
            _case("hr-offboarding", UserOffboarded(reason="left")),
            "user_offboarded has no subject",
            id="no-subject",
        ),
        pytest.param(
            _case("incident-bot", IncidentDeclared(scope=SCOPE)),
            "incident_declared has no incident_id",
            id="declared-no-incident-id",
        ),
        pytest.param(
            _case("incident-bot", IncidentDeclared(incident_id="inc-1")),
            "incident_declared has no scope (set `everything` explicitly",
            id="no-scope",
        ),
        pytest.param(
            _case(
                "incident-bot",
                IncidentDeclared(
                    incident_id="inc-1", scope=common_pb2.AccessScope(everything=False)
                ),
            ),
            "incident_declared has no scope",
            id="empty-scope",
        ),
        pytest.param(
            _case("incident-bot", IncidentResolved(reason="fixed")),
            "incident_resolved has no incident_id",
            id="resolved-no-incident-id",
        ),
        pytest.param(
            _case("ci-pipelines", _requested(resource="", permission="")),
            "access_requested has no resource, no permission",
            id="request-missing-fields",
        ),
        pytest.param(
            _case("ci-pipelines", _requested(duration_seconds=-5)),
            "access_requested.duration_seconds is -5; it must be between 0 and",
            id="negative-duration",
        ),
    ],
)
def test_refusals(setup: Setup, make: Mutation, reason: str) -> None:
    signed = make(setup)
    with pytest.raises(AccessEventRefused) as refused:
        setup.verifier.verify(signed)
    assert reason in refused.value.reason


def test_an_event_at_the_edge_of_the_window_still_verifies(setup: Setup) -> None:
    signed = _case("hr-offboarding", GOOD["hr-offboarding"], issued_at=NOW - timedelta(minutes=10))(
        setup
    )
    assert setup.verifier.verify(signed).user_offboarded.subject == "bob"


def _decoded(signed: access_events_pb2.SignedAccessEvent, *, event_id: str) -> DecodedEvent:
    envelope = build_envelope(signed, producer="x", occurred_at=NOW, event_id=event_id)
    return decode(envelope.SerializeToString())


def test_verify_decoded_binds_the_envelope_to_the_signed_event_id(setup: Setup) -> None:
    signer = setup.signers["hr-offboarding"]
    event = signer.event(UserOffboarded(subject="bob"))
    signed = signer.sign(event)

    assert setup.verifier.verify_decoded(_decoded(signed, event_id=event.event_id)) == event
    with pytest.raises(AccessEventRefused, match="differs from the signed event id"):
        setup.verifier.verify_decoded(_decoded(signed, event_id="rewrapped-copy"))
    heartbeat = build_envelope(
        events_pb2.AgentHeartbeat(agent_id="a"), producer="x", occurred_at=NOW
    )
    with pytest.raises(AccessEventRefused, match="expected a SignedAccessEvent"):
        setup.verifier.verify_decoded(decode(heartbeat.SerializeToString()))


def test_the_signer_refuses_what_consumers_would_refuse(setup: Setup) -> None:
    with pytest.raises(ValueError, match="user_offboarded has no subject"):
        setup.signers["hr-offboarding"].event(UserOffboarded())
    with pytest.raises(TypeError, match="lapse.v1.AgentHeartbeat is not an access event"):
        setup.signers["hr-offboarding"].event(events_pb2.AgentHeartbeat())  # type: ignore[arg-type]


# --- the registry ---------------------------------------------------------------------


def _write_registry(directory: Path, text: str) -> Path:
    path = directory / "registry.yaml"
    path.write_text(text)
    return path


def _pem_of(setup: Setup, producer: str) -> str:
    return (setup.directory / "keys" / f"{producer}.pub").read_text()


def test_the_registry_loads_keys_inline_and_relative_to_its_own_directory(setup: Setup) -> None:
    inline = "\n".join("      " + line for line in _pem_of(setup, "incident-bot").splitlines())
    nested = setup.directory / "conf"
    nested.mkdir()
    path = _write_registry(
        nested,
        "producers:\n"
        "  hr-offboarding:\n"
        "    public_key_file: ../keys/hr-offboarding.pub\n"
        "    events: [user_offboarded]\n"
        "  incident-bot:\n"
        "    public_key: |\n"
        f"{inline}\n"
        "    events: [incident_declared, incident_resolved]\n",
    )
    registry = ProducerRegistry.load(path)

    assert registry.producers == ["hr-offboarding", "incident-bot"]
    incident_bot = registry.get("incident-bot")
    assert incident_bot is not None
    assert incident_bot.events == {"incident_declared", "incident_resolved"}
    assert incident_bot.machine_identities == frozenset()
    assert registry.get("ci-pipelines") is None
    verifier = AccessEventVerifier(registry=registry, clock=setup.clock)
    signer = setup.signers["incident-bot"]
    verifier.verify(signer.sign(signer.event(IncidentResolved(incident_id="inc-1"))))


def _entry(body: str, name: str = "hr-offboarding") -> str:
    return f"producers:\n  {name}:\n" + "".join(f"    {line}\n" for line in body.splitlines())


KEY = "public_key_file: keys/hr-offboarding.pub"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _entry(f"{KEY}\nevents: [user_offboarded]\nevent: [x]"),
            "producer 'hr-offboarding', field event: Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param(
            "producers: {}\nconsumers: {}\n",
            "field consumers: Extra inputs are not permitted",
            id="unknown-top-level-field",
        ),
        pytest.param("prodcers: {}\n", "field producers: Field required", id="no-producers"),
        pytest.param(
            _entry(f"{KEY}\nevents: [user_offboarded, user_deleted]"),
            "producer 'hr-offboarding', field events: unknown event kind(s) user_deleted; known: access_requested,",
            id="unknown-kind",
        ),
        pytest.param(
            _entry(f"{KEY}\nevents: []"),
            "producer 'hr-offboarding', field events: List should have at least 1 item",
            id="no-events",
        ),
        pytest.param(
            _entry("events: [user_offboarded]"),
            "producer 'hr-offboarding': set exactly one of public_key_file or public_key",
            id="no-key",
        ),
        pytest.param(
            _entry(f"{KEY}\npublic_key: abc\nevents: [user_offboarded]"),
            "producer 'hr-offboarding': set exactly one of public_key_file or public_key",
            id="two-keys",
        ),
        pytest.param(
            _entry(f"{KEY}\nevents: [user_offboarded]\nmachine_identities: [ci-deploy]"),
            "producer 'hr-offboarding': machine_identities is only meaningful with access_requested",
            id="machines-without-access-requested",
        ),
        pytest.param(
            _entry(f"{KEY}\nevents: [user_offboarded]", name="HR Offboarding"),
            "producer name 'HR Offboarding': String should match pattern",
            id="bad-producer-name",
        ),
        pytest.param(
            _entry("public_key_file: keys/missing.pub\nevents: [user_offboarded]"),
            "producer 'hr-offboarding', field public_key_file: cannot read",
            id="missing-key-file",
        ),
        pytest.param(
            _entry("public_key: not a pem\nevents: [user_offboarded]"),
            "producer 'hr-offboarding', field public_key: not a PEM public key",
            id="garbage-key",
        ),
        pytest.param(
            _entry("public_key_file: keys/ecdsa.pub\nevents: [user_offboarded]"),
            "producer 'hr-offboarding', field public_key_file: access events are signed with Ed25519, not",
            id="not-ed25519",
        ),
        pytest.param(
            "producers: [a, b]\n",
            "field producers: Input should be a valid dictionary",
            id="producers-not-a-mapping",
        ),
        pytest.param("- just a list\n", "Input should be a valid dictionary", id="not-a-mapping"),
        pytest.param("producers: {a: [\n", "not valid YAML", id="bad-yaml"),
    ],
)
def test_registry_validation_errors_name_the_file_producer_and_field(
    setup: Setup, text: str, expected: str
) -> None:
    ecdsa = ec.generate_private_key(ec.SECP256R1()).public_key()
    (setup.directory / "keys" / "ecdsa.pub").write_bytes(
        ecdsa.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = _write_registry(setup.directory, text)
    with pytest.raises(ProducerRegistryError) as error:
        ProducerRegistry.load(path)
    message = str(error.value)
    print(message)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_a_missing_registry_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ProducerRegistryError, match=r"nowhere\.yaml: cannot read the producer registry"
    ):
        ProducerRegistry.load(tmp_path / "nowhere.yaml")


# --- keygen ---------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_the_owner_reads_and_a_loadable_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    code = access_events_cli(
        [
            "keygen",
            "--producer",
            "ci-pipelines",
            "--out",
            str(out),
            "--event",
            "access_requested",
            "--machine-identity",
            "ci-deploy",
        ]
    )
    captured = capsys.readouterr()

    assert code == 0
    assert stat.S_IMODE(os.stat(out / "ci-pipelines.key").st_mode) == 0o600
    assert (out / "ci-pipelines.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    registry = ProducerRegistry.load(_write_registry(tmp_path, captured.out))
    producer = registry.get("ci-pipelines")
    assert producer is not None
    assert producer.events == {"access_requested"}
    assert producer.machine_identities == {"ci-deploy"}

    # A rerun keeps the key consumers already trust.
    before = (out / "ci-pipelines.key").read_bytes()
    assert access_events_cli(["keygen", "--producer", "ci-pipelines", "--out", str(out)]) == 0
    assert "kept existing" in capsys.readouterr().err
    assert (out / "ci-pipelines.key").read_bytes() == before


def test_keygen_refuses_a_name_that_is_not_a_producer_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert access_events_cli(["keygen", "--producer", "../etc/x", "--out", str(tmp_path)]) == 2
    assert "producer name '../etc/x' must be" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the consumer's RefusedMessage path ----------------------------------------------


async def _count(sessions: async_sessionmaker[AsyncSession], model: type[Base]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_refused_message_is_quarantined_with_nothing_written_and_not_redelivered(
    setup: Setup, sessions: async_sessionmaker[AsyncSession]
) -> None:
    topics = Topics(prefix="unit.")
    # TestKafkaBroker connects nowhere, so no credential is involved.
    broker = create_broker(
        KafkaSettings(topic_prefix="unit.", security_protocol="PLAINTEXT", allow_plaintext=True),
        client_id="lapse-probe",
    )
    quarantine = Quarantine(
        publisher=BrokerPublisher(broker),
        topic=topics.quarantine,
        producer="probe",
        clock=setup.clock,
    )
    handled: list[str] = []

    async def handle(*, session: AsyncSession, event: DecodedEvent) -> None:
        # Stage a side effect first: a refusal must roll it back with the inbox row.
        enqueue(
            session,
            topic=topics.revoke_requests,
            key="k",
            payload=events_pb2.AgentHeartbeat(),
            producer="probe",
            clock=setup.clock,
        )
        handled.append(setup.verifier.verify_decoded(event).event_id)

    subscribe_events(
        broker,
        topic=topics.access_events,
        consumer="probe",
        routes=[on(access_events_pb2.SignedAccessEvent, handler=handle)],
        sessions=sessions,
        relay=None,
        quarantine=quarantine,
        clock=setup.clock,
        batch_size=50,
    )
    quarantined: list[events_pb2.QuarantinedMessage] = []

    @broker.subscriber(topics.quarantine)
    async def operator(message: KafkaMessage) -> None:
        envelope = envelope_pb2.Envelope.FromString(message.body)
        quarantined.append(events_pb2.QuarantinedMessage.FromString(envelope.payload))

    hr = setup.signers["hr-offboarding"]
    forged = hr.sign(hr.event(UserOffboarded(subject="alice")))
    forged.signature = bytes(64)
    forged_event = access_events_pb2.AccessEvent.FromString(forged.event)
    good_event = hr.event(UserOffboarded(subject="bob"))
    async with TestKafkaBroker(broker) as test_broker:
        for signed, event_id in (
            (forged, forged_event.event_id),
            (hr.sign(good_event), good_event.event_id),
        ):
            envelope = build_envelope(
                signed, producer="hr-offboarding", occurred_at=NOW, event_id=event_id
            )
            await test_broker.publish(envelope.SerializeToString(), topics.access_events, key=b"k")

    [refused] = quarantined
    print(refused.reason)
    assert refused.reason == "signature does not verify with the key of producer 'hr-offboarding'"
    assert refused.consumer == "probe"
    assert refused.source_topic == topics.access_events
    assert handled == [good_event.event_id]
    # Only the good event left an inbox row and its staged side effect.
    assert await _count(sessions, InboxRecord) == 1
    assert await _count(sessions, OutboxMessage) == 1


# --- the publisher against the real Kafka ---------------------------------------------


@pytest.mark.integration
async def test_publish_to_kafka_and_verify_the_record_read_back(
    setup: Setup, tmp_path: Path
) -> None:
    kafka = await provisioned(
        Installation(topic_prefix=f"it-ae-{uuid.uuid4().hex[:8]}.", producers=("hr-offboarding",)),
        tmp_path,
    )
    settings = kafka.settings("lapse-producer-hr-offboarding")
    topic = Topics(prefix=settings.topic_prefix).access_events
    pem = (setup.directory / "keys" / "hr-offboarding.key").read_bytes()
    try:
        async with AccessEventPublisher.connect(
            kafka=settings, producer="hr-offboarding", private_key_pem=pem, clock=setup.clock
        ) as publisher:
            event_id = await publisher.publish(UserOffboarded(subject="bob", reason="left"))

        [record] = await read_all(kafka.settings(ADMIN), topic)
        print(f"read back {record.topic}[{record.partition}]@{record.offset} key={record.key!r}")
        assert record.key == b"bob"
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["lapse-type"] == "lapse.v1.SignedAccessEvent"
        assert headers["lapse-event-id"] == event_id
        event = setup.verifier.verify_decoded(decode(record.value))
        assert event.event_id == event_id
        assert event.producer == "hr-offboarding"
        assert event.user_offboarded == UserOffboarded(subject="bob", reason="left")
    finally:
        await kafka.delete_topics()


# --- publish: the CLI -----------------------------------------------------------------


def _publish_argv(producer: str, key: Path | str, *kind_args: str) -> list[str]:
    return ["publish", "--producer", producer, "--key", str(key), *kind_args]


@pytest.mark.parametrize(
    ("kind_args", "expected"),
    [
        pytest.param(
            ["user-offboarded", "--subject", "bob", "--reason", "left the company"],
            UserOffboarded(subject="bob", reason="left the company"),
            id="user-offboarded",
        ),
        pytest.param(
            [
                "incident-declared",
                "--incident-id",
                "INC-7",
                "--scope",
                "integration=demo-pg",
                "--scope",
                "resource=appdb",
                "--reason",
                "leak",
            ],
            IncidentDeclared(
                incident_id="INC-7",
                scope=common_pb2.AccessScope(integration_id="demo-pg", resource="appdb"),
                reason="leak",
                lockdown=True,
            ),
            id="incident-declared-locks-down-by-default",
        ),
        pytest.param(
            ["incident-declared", "--incident-id", "INC-8", "--everything", "--no-lockdown"],
            IncidentDeclared(
                incident_id="INC-8", scope=common_pb2.AccessScope(everything=True), lockdown=False
            ),
            id="incident-declared-everything-no-lockdown",
        ),
        pytest.param(
            ["incident-declared", "--incident-id", "INC-9"]
            + [f"--scope={key}={key}-x" for key in ("permission", "user", "group", "flow")],
            IncidentDeclared(
                incident_id="INC-9",
                scope=common_pb2.AccessScope(
                    permission="permission-x", user="user-x", group="group-x", flow="flow-x"
                ),
                lockdown=True,
            ),
            id="incident-declared-every-scope-key",
        ),
        pytest.param(
            ["incident-resolved", "--incident-id", "INC-7", "--reason", "fixed"],
            IncidentResolved(incident_id="INC-7", reason="fixed"),
            id="incident-resolved",
        ),
        pytest.param(
            [
                "access-requested",
                "--machine-identity",
                "ci-deploy",
                "--integration",
                "demo-pg",
                "--resource",
                "appdb",
                "--permission",
                "read",
                "--principal",
                "ci_deploy",
                "--for",
                "30m",
                "--justification",
                "deploy 1.2",
            ],
            AccessRequested(
                machine_identity="ci-deploy",
                integration_id="demo-pg",
                resource="appdb",
                permission="read",
                principal="ci_deploy",
                duration_seconds=1800,
                justification="deploy 1.2",
            ),
            id="access-requested",
        ),
        pytest.param(
            [
                "access-requested",
                "--machine-identity",
                "ci-deploy",
                "--integration",
                "demo-pg",
                "--resource",
                "appdb",
                "--permission",
                "read",
            ],
            AccessRequested(
                machine_identity="ci-deploy",
                integration_id="demo-pg",
                resource="appdb",
                permission="read",
            ),
            id="access-requested-flow-default-duration",
        ),
    ],
)
def test_publish_arguments_build_the_payload(
    kind_args: list[str], expected: AccessEventPayload
) -> None:
    args = parse_args(_publish_argv("incident-bot", "k.key", *kind_args))

    assert args.producer == "incident-bot"
    assert args.key == Path("k.key")
    assert args.timeout == 15.0
    payload = build_payload(args)
    assert type(payload) is type(expected)
    assert payload == expected


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("90s", 90), ("30m", 1800), ("4h", 14400), ("2d", 172800), ("600", 600)],
)
def test_publish_durations(duration: str, seconds: int) -> None:
    args = parse_args(
        _publish_argv(
            "ci-pipelines",
            "k",
            *("access-requested", "--machine-identity", "m", "--integration", "i"),
            *("--resource", "r", "--permission", "p", "--for", duration),
        )
    )
    payload = build_payload(args)
    assert isinstance(payload, AccessRequested)
    assert payload.duration_seconds == seconds


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before anything tries to reach Kafka."""

    async def must_not_publish(**kwargs: object) -> str:
        raise AssertionError(f"tried to publish {kwargs.get('payload')!r}")

    monkeypatch.setattr("lapse_common.access_events.__main__.publish_event", must_not_publish)


REQUEST = ("access-requested", "--machine-identity", "ci-deploy", "--integration", "pg")
REQUEST_FIELDS = (*REQUEST, "--resource", "orders", "--permission", "read")


@pytest.mark.usefixtures("no_kafka")
@pytest.mark.parametrize(
    ("producer", "key", "kind_args", "message"),
    [
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-declared", "--incident-id", "I", "--scope", "team=db"],
            "error: unknown --scope key 'team' in 'team=db'; use one of integration, resource, permission, user, group, flow",
            id="unknown-scope-key",
        ),
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-declared", "--incident-id", "I", "--scope", "resource"],
            "error: --scope 'resource' needs a value: resource=VALUE",
            id="scope-without-value",
        ),
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-declared", "--incident-id", "I", "--scope", "user=a", "--scope", "user=b"],
            "error: --scope user is given twice",
            id="scope-key-twice",
        ),
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-declared", "--incident-id", "I", "--everything", "--scope", "flow=f"],
            "error: --everything means all access: do not combine it with --scope",
            id="everything-and-scope",
        ),
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-declared", "--incident-id", "I"],
            "error: incident_declared has no scope (set `everything` explicitly",
            id="signer-refuses-no-scope",
        ),
        pytest.param(
            "hr-offboarding",
            "hr-offboarding.key",
            ["user-offboarded", "--subject", "  "],
            "error: user_offboarded has no subject",
            id="signer-refuses-blank-subject",
        ),
        pytest.param(
            "incident-bot",
            "incident-bot.key",
            ["incident-resolved", "--incident-id", ""],
            "error: incident_resolved has no incident_id",
            id="signer-refuses-empty-incident-id",
        ),
        pytest.param(
            "ci-pipelines",
            "ci-pipelines.key",
            [*REQUEST_FIELDS, "--for", "30x"],
            "error: --for '30x' is not a positive duration like 90s, 30m, 4h or 2d",
            id="bad-duration",
        ),
        pytest.param(
            "ci-pipelines",
            "ci-pipelines.key",
            [*REQUEST_FIELDS, "--for", "0m"],
            "error: --for '0m' is not a positive duration",
            id="zero-duration",
        ),
        pytest.param(
            "ci-pipelines",
            "ci-pipelines.key",
            [*REQUEST, "--resource", "orders", "--permission", " "],
            "error: access_requested has no permission",
            id="signer-refuses-blank-permission",
        ),
        pytest.param(
            "hr-offboarding",
            "missing.key",
            ["user-offboarded", "--subject", "bob"],
            "error: cannot read the private key {keys}/missing.key: No such file or directory",
            id="unreadable-key-file",
        ),
        pytest.param(
            "hr-offboarding",
            "hr-offboarding.pub",
            ["user-offboarded", "--subject", "bob"],
            "error: {keys}/hr-offboarding.pub: not an unencrypted PEM private key",
            id="public-key-given",
        ),
        pytest.param(
            "HR",
            "hr-offboarding.key",
            ["user-offboarded", "--subject", "bob"],
            "error: producer name 'HR' must be",
            id="bad-producer-name",
        ),
    ],
)
def test_publish_refuses_bad_input_with_exit_2(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    producer: str,
    key: str,
    kind_args: list[str],
    message: str,
) -> None:
    keys = setup.directory / "keys"
    code = access_events_cli(_publish_argv(producer, keys / key, *kind_args))
    captured = capsys.readouterr()

    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith(message.format(keys=keys))


@pytest.mark.usefixtures("no_kafka")
def test_publish_refuses_invalid_kafka_settings_with_exit_2(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_KAFKA_TOPIC_PREFIX", "no spaces")
    key = setup.directory / "keys" / "hr-offboarding.key"
    code = access_events_cli(
        _publish_argv("hr-offboarding", key, "user-offboarded", "--subject", "b")
    )

    assert code == 2
    assert capsys.readouterr().err == (
        "error: invalid Kafka settings: LAPSE_KAFKA_TOPIC_PREFIX: "
        "may contain only letters, digits, '.', '_' and '-'\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["publish", "--producer", "p", "--key", "k"], id="no-kind"),
        pytest.param(
            ["publish", "--producer", "p", "--key", "k", "user-offboarded"], id="no-subject"
        ),
        pytest.param(
            ["publish", "--key", "k", "user-offboarded", "--subject", "s"], id="no-producer"
        ),
        pytest.param(
            [
                "publish",
                "--producer",
                "p",
                "--key",
                "k",
                "--timeout",
                "0",
                "incident-resolved",
                "--incident-id",
                "i",
            ],
            id="zero-timeout",
        ),
        pytest.param(
            ["publish", "--producer", "p", "--key", "k", "user-deleted", "--subject", "s"],
            id="unknown-kind",
        ),
    ],
)
def test_publish_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        access_events_cli(argv)
    assert exit_.value.code == 2
    assert "error: " in capsys.readouterr().err


async def test_publish_exits_1_when_kafka_refuses_the_connection(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    # Nothing listens there to authenticate to: the failure under test is the connection.
    monkeypatch.setenv("LAPSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    monkeypatch.setenv("LAPSE_KAFKA_ALLOW_PLAINTEXT", "true")
    key = setup.directory / "keys" / "hr-offboarding.key"
    # In a thread: the CLI runs its own event loop, as it does from a shell.
    code = await asyncio.to_thread(
        access_events_cli, _publish_argv("hr-offboarding", key, "user-offboarded", "--subject", "b")
    )
    captured = capsys.readouterr()

    assert code == 1
    assert captured.out == ""
    assert (
        "error: cannot publish to lapse.access-events.v1 on Kafka at 127.0.0.1:1: "
        "KafkaConnectionError: Unable to bootstrap" in captured.err
    )


async def test_publish_gives_up_on_a_silent_kafka_after_the_timeout(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never answer; end when the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("LAPSE_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    # Nothing listens there to authenticate to: the failure under test is the connection.
    monkeypatch.setenv("LAPSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    monkeypatch.setenv("LAPSE_KAFKA_ALLOW_PLAINTEXT", "true")
    key = setup.directory / "keys" / "incident-bot.key"
    argv = ["publish", "--producer", "incident-bot", "--key", str(key), "--timeout", "0.5"]
    started = asyncio.get_running_loop().time()
    async with server:
        code = await asyncio.to_thread(
            access_events_cli, [*argv, "incident-resolved", "--incident-id", "INC-7"]
        )
    elapsed = asyncio.get_running_loop().time() - started
    captured = capsys.readouterr()

    assert code == 1
    assert elapsed < 10  # aiokafka alone would wait out its 40 s request timeout
    assert (
        f"error: Kafka at 127.0.0.1:{port} did not confirm the event on lapse.access-events.v1 "
        "within 0.5s" in captured.err
    )


@pytest.mark.integration
async def test_publish_cli_sends_a_signed_event_consumers_verify(
    setup: Setup,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    prefix = f"it-ae-cli-{uuid.uuid4().hex[:8]}."
    kafka = await provisioned(
        Installation(topic_prefix=prefix, producers=("ci-pipelines",)), tmp_path / "kafka"
    )
    # The CLI reads its Kafka identity from the environment, as an operator sets it.
    monkeypatch.setenv("LAPSE_KAFKA_BOOTSTRAP_SERVERS", kafka.admin.bootstrap_servers)
    monkeypatch.setenv("LAPSE_KAFKA_TOPIC_PREFIX", prefix)
    for name, value in kafka.env("lapse-producer-ci-pipelines").items():
        monkeypatch.setenv(name, value)
    topic = Topics(prefix=prefix).access_events
    key = setup.directory / "keys" / "ci-pipelines.key"
    try:
        code = await asyncio.to_thread(
            access_events_cli,
            _publish_argv(
                "ci-pipelines",
                key,
                *REQUEST_FIELDS,
                *("--principal", "ci_deploy", "--for", "30m", "--justification", "deploy"),
            ),
        )
        captured = capsys.readouterr()
        print(captured.out, captured.err)
        assert code == 0
        [line] = captured.out.splitlines()
        fields = dict(part.split("=", 1) for part in line.split())
        assert fields["topic"] == topic

        [record] = await read_all(kafka.settings(ADMIN), topic)
        print(f"read back {record.topic}[{record.partition}]@{record.offset} key={record.key!r}")
        assert record.key == b"ci-deploy"
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["lapse-type"] == "lapse.v1.SignedAccessEvent"
        assert headers["lapse-event-id"] == fields["event_id"]
        # The CLI stamps the real time: verify with a real clock.
        verifier = AccessEventVerifier(registry=setup.registry, clock=SystemClock())
        event = verifier.verify_decoded(decode(record.value))
        assert event.event_id == fields["event_id"]
        assert event.producer == "ci-pipelines"
        assert event.access_requested == AccessRequested(
            machine_identity="ci-deploy",
            integration_id="pg",
            resource="orders",
            permission="read",
            principal="ci_deploy",
            duration_seconds=1800,
            justification="deploy",
        )
    finally:
        await kafka.delete_topics()
