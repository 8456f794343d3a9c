"""Wiring of the audit service process."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from lapse_common.audit_checkpoints import load_private_key
from lapse_common.auth import AuthInterceptor, verifier_for_service
from lapse_common.messaging.consumer import subscribe_events
from lapse_common.messaging.payload_routes import on
from lapse_common.runtime import Service
from lapse_common.settings import AuthSettings, DatabaseSettings

from lapse_audit.checkpoint_store import CheckpointStore
from lapse_audit.grpc_api import AuditApi
from lapse_audit.handlers import agent_command_topic, fixed_topic, recording_handler
from lapse_audit.models import AuditBase
from lapse_audit.operations.write_checkpoint import CheckpointWriter
from lapse_audit.page_tokens import PageTokens
from lapse_audit.settings import AuditSettings

# One consumer group (and inbox name) for every topic: an event id is recorded once,
# whichever topic or partition delivers it, however often.
CONSUMER = "audit"

# services/<name>/migrations: Alembic revisions applied at start-up.
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def run() -> None:
    settings = AuditSettings()
    # Fails fast on a missing key, before the service touches the database or Kafka.
    verifier = verifier_for_service(AuthSettings(), name="audit")
    checkpoint_key = _checkpoint_key(settings)
    checkpoints = CheckpointStore(
        settings.checkpoint_dir, public_key=checkpoint_key.public_key(), log=settings.log_name
    )
    checkpoints.prepare()
    service = await Service.create(
        name="audit",
        database_url=DatabaseSettings().database_url,
        metadatas=[AuditBase.metadata],
        migrations_dir=MIGRATIONS,
    )
    subscribe_audit_consumers(service)
    writer = CheckpointWriter(
        sessions=service.sessions,
        store=checkpoints,
        key=checkpoint_key,
        log=settings.log_name,
        clock=service.clock,
    )

    async def checkpoint_timer() -> None:
        await writer.run_every(settings.checkpoint_interval_seconds)

    service.background.append(checkpoint_timer)
    api = AuditApi(
        sessions=service.sessions,
        checkpoints=checkpoints,
        writer=writer,
        page_tokens=PageTokens.derived_from(checkpoint_key),
        log_name=settings.log_name,
    )
    await service.run(
        grpc_servicers=[api.register],
        grpc_address=settings.grpc_address,
        grpc_interceptors=[AuthInterceptor(verifier)],
    )


def subscribe_audit_consumers(service: Service) -> None:
    """Every shared topic (quarantine and dead letters included) and every agent's
    command topic, each payload type accepted.

    Two group members in all: one reads the shared topics together, one matches agents'
    topics by pattern (a new agent's topic is picked up on the next metadata refresh and
    read from its start). Both record into the same inbox, so an event is stored once
    whichever topic or partition delivers it.
    """
    agents = service.follow_agent_registry()
    handler = recording_handler(topic_of=fixed_topic(""), clock=service.clock, agents=agents)
    subscribe_events(
        service.broker,
        topic=service.topics.shared(),
        consumer=CONSUMER,
        group_prefix=service.topics.prefix,
        routes=[on(Message, handler=handler)],
        sessions=service.sessions,
        # Audit never writes to the outbox, so there is nothing for the relay to wake for.
        relay=None,
        quarantine=service.quarantine,
        clock=service.clock,
        batch_size=service.kafka.consumer_batch_size,
    )
    subscribe_events(
        service.broker,
        pattern=service.topics.agent_commands_pattern,
        consumer=CONSUMER,
        group_id=f"{CONSUMER}-agent-commands",
        group_prefix=service.topics.prefix,
        routes=[
            on(
                Message,
                handler=recording_handler(
                    topic_of=agent_command_topic(service.topics),
                    clock=service.clock,
                    agents=agents,
                ),
            )
        ],
        sessions=service.sessions,
        relay=None,
        quarantine=service.quarantine,
        clock=service.clock,
        batch_size=service.kafka.consumer_batch_size,
    )


def _checkpoint_key(settings: AuditSettings) -> Ed25519PrivateKey:
    path = settings.checkpoint_key_file
    try:
        return load_private_key(path.read_bytes())
    except OSError as error:
        raise SystemExit(
            f"audit checkpoint key {path} cannot be read ({error.strerror}); set "
            "LAPSE_AUDIT_CHECKPOINT_KEY_FILE to an Ed25519 private key (PEM) kept outside "
            "the database (dev: python -m lapse_common.dev_keys DIR creates one)"
        ) from None
    except ValueError as error:
        raise SystemExit(f"audit checkpoint key {path}: {error}") from None
