"""`lapse agents enroll | rotate-key | disable` (role admin): an agent's identity, end to end.

Enrolling makes the agent's Ed25519 key pair, its Kafka principal (credential, command
topic, ACLs: through the admin step, so the LAPSE_KAFKA_* settings must be the broker's
super user's) and registers its public key with the revoker, which publishes it to every
service that verifies agents. It writes what the agent's process needs to one 0600 file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import grpc
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_common.auth import ensure_keypair
from lapse_common.kafka_admin import principals
from lapse_common.kafka_admin.admin_requests import KafkaAdminRefused
from lapse_common.kafka_admin.provisioning import (
    Installation,
    password_file,
    provision,
    remove_principal,
)
from lapse_common.messaging.kafka_security import KafkaSecurityMisconfigured
from lapse_common.pb.lapse.v1 import revoker_service_pb2, revoker_service_pb2_grpc
from lapse_common.private_files import write_private_file
from lapse_common.settings import KafkaSettings
from lapse_common.topics import validate_agent_id
from pydantic import ValidationError

from lapse_cli.config import CliSettings
from lapse_cli.session import fail, metadata, service_channel

OutOption = Annotated[
    Path, typer.Option("--out", help="where the agent's key, password and env file go")
]


def enroll(agent_id: str, out: OutOption = Path(".lapse/agents")) -> None:
    """Enroll a new agent: key pair, Kafka principal and ACLs, registration."""
    settings, kafka = _settings(agent_id)
    private, public = ensure_keypair(out, agent_id)
    # The registry first: the revoker checks the caller is an admin before anything is
    # made on the broker. Enrolling again with the same key is no change, so a run that
    # failed half-way can simply be repeated.
    registration = _call(
        settings,
        lambda stub, meta: stub.EnrollAgent(
            revoker_service_pb2.EnrollAgentRequest(
                agent_id=agent_id, public_key_pem=public.read_text()
            ),
            metadata=meta,
        ),
    )
    _provision_kafka(kafka, agent_id, out)
    env_file = _write_agent_env(out, agent_id, private, kafka)
    typer.echo(f"enrolled agent {agent_id}: signing key {registration.key_id}")
    typer.echo(f"  private key  {private} (0600; it never leaves the agent's host)")
    typer.echo(f"  Kafka user   {kafka.topic_prefix}lapse-agent-{agent_id}")
    typer.echo(f"  agent config {env_file} (0600): source it in the agent's environment")


def rotate_key(agent_id: str, out: OutOption = Path(".lapse/agents")) -> None:
    """Give an agent a new signing key (restart the agent with it right after)."""
    # What the agent signs with the old key is refused from the moment the revoker has
    # the new one.
    settings, _ = _settings(agent_id)
    key = Ed25519PrivateKey.generate()
    private = out / f"{agent_id}.key"
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registration = _call(
        settings,
        lambda stub, meta: stub.RotateAgentKey(
            revoker_service_pb2.EnrollAgentRequest(
                agent_id=agent_id, public_key_pem=public_pem.decode()
            ),
            metadata=meta,
        ),
    )
    # Written only once the revoker took the new key: a refused rotation leaves the agent's
    # working key in place.
    write_private_file(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    (out / f"{agent_id}.pub").write_bytes(public_pem)
    typer.echo(f"agent {agent_id} now signs with key {registration.key_id} ({private})")
    typer.echo("restart the agent now: what it signs with the old key is refused")


def disable(
    agent_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")] = "",
) -> None:
    """Disable an agent: key withdrawn, Kafka credential and ACLs removed."""
    # Nothing it sends counts any more, and it cannot connect.
    settings, kafka = _settings(agent_id)
    _call(
        settings,
        lambda stub, meta: stub.DisableAgent(
            revoker_service_pb2.DisableAgentRequest(agent_id=agent_id, reason=reason),
            metadata=meta,
        ),
    )
    installation = Installation(topic_prefix=kafka.topic_prefix, agents=(agent_id,), services=False)
    try:
        removed = asyncio.run(remove_principal(kafka, installation, principals.agent(agent_id)))
    except (KafkaAdminRefused, KafkaSecurityMisconfigured, OSError) as error:
        raise fail(
            f"agent {agent_id} is disabled in the registry, but its Kafka credential could "
            f"not be removed: {error}"
        ) from error
    typer.echo(
        f"disabled agent {agent_id}: key withdrawn, Kafka credential and {removed} ACLs removed"
    )


def _settings(agent_id: str) -> tuple[CliSettings, KafkaSettings]:
    try:
        validate_agent_id(agent_id)
    except ValueError as error:
        raise fail(str(error), code=2) from error
    try:
        return CliSettings(), KafkaSettings()
    except ValidationError as error:
        raise fail(f"invalid LAPSE_KAFKA_* settings: {error}", code=2) from error


def _provision_kafka(kafka: KafkaSettings, agent_id: str, out: Path) -> None:
    installation = Installation(topic_prefix=kafka.topic_prefix, agents=(agent_id,), services=False)
    try:
        asyncio.run(provision(kafka, installation, credentials_dir=out))
    except KafkaSecurityMisconfigured as error:
        raise fail(
            f"{error} (enrolling needs the Kafka super user's LAPSE_KAFKA_* settings)", code=2
        ) from error
    except (KafkaAdminRefused, OSError) as error:
        raise fail(f"Kafka at {kafka.bootstrap_servers}: {error}") from error


Registry = revoker_service_pb2_grpc.RevokerServiceStub
Metadata = tuple[tuple[str, str], ...]


def _call(
    settings: CliSettings,
    invoke: Callable[[Registry, Metadata], revoker_service_pb2.AgentRegistration],
) -> revoker_service_pb2.AgentRegistration:
    with service_channel(settings.revoker_address) as channel:
        try:
            answer = invoke(Registry(channel), metadata(settings))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise fail(
                    f"cannot reach the revoker at {settings.revoker_address} (is Lapse running?)"
                ) from error
            raise fail(f"{error.code().name}: {error.details()}") from error
    assert isinstance(answer, revoker_service_pb2.AgentRegistration)
    return answer


def _write_agent_env(out: Path, agent_id: str, private: Path, kafka: KafkaSettings) -> Path:
    user = f"{kafka.topic_prefix}lapse-agent-{agent_id}"
    lines = {
        "LAPSE_AGENT_AGENT_ID": agent_id,
        "LAPSE_AGENT_SIGNING_KEY_FILE": str(private.resolve()),
        "LAPSE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LAPSE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "LAPSE_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
        "LAPSE_KAFKA_SASL_MECHANISM": kafka.sasl_mechanism,
        "LAPSE_KAFKA_USERNAME": user,
        "LAPSE_KAFKA_PASSWORD_FILE": str(password_file(out, user).resolve()),
    }
    if kafka.ssl_cafile is not None:
        lines["LAPSE_KAFKA_SSL_CAFILE"] = str(kafka.ssl_cafile.resolve())
    env_file = out / f"{agent_id}.env"
    write_private_file(env_file, "".join(f"{k}={v}\n" for k, v in lines.items()).encode())
    return env_file
