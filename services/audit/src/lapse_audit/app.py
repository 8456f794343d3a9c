"""Wiring of the audit service process."""

from __future__ import annotations

from lapse_common.auth import AuthInterceptor, TokenVerifier
from lapse_common.messaging.consumer import subscribe_events
from lapse_common.runtime import Service
from lapse_common.settings import AuthSettings, DatabaseSettings

from lapse_audit.grpc_api import AuditApi
from lapse_audit.handlers import TopicOf, agent_command_topic, fixed_topic, recording_handler
from lapse_audit.models import AuditBase
from lapse_audit.settings import AuditSettings

# One consumer group (and inbox name) for every topic: an event id is recorded once,
# whichever topic or partition delivers it, however often.
CONSUMER = "audit"


async def run() -> None:
    settings = AuditSettings()
    # Fails fast on a missing key, before the service touches the database or Kafka.
    verifier = TokenVerifier.from_settings(AuthSettings())
    service = await Service.create(
        name="audit", database_url=DatabaseSettings().database_url, metadatas=[AuditBase.metadata]
    )
    subscribe_audit_consumers(service)
    await service.run(
        grpc_servicers=[AuditApi(sessions=service.sessions).register],
        grpc_address=settings.grpc_address,
        grpc_interceptors=[AuthInterceptor(verifier)],
    )


def subscribe_audit_consumers(service: Service) -> None:
    """Every shared topic (quarantine and dead letters included) and every agent's
    command topic, each payload type accepted."""
    for topic in service.topics.shared():
        _subscribe(service, topic_of=fixed_topic(topic), topic=topic)
    # Agents' topics are matched by pattern: a new agent's topic is picked up on the next
    # metadata refresh and read from its start, so nothing on it is missed.
    _subscribe(
        service,
        topic_of=agent_command_topic(service.topics),
        pattern=service.topics.agent_commands_pattern,
    )


def _subscribe(
    service: Service, *, topic_of: TopicOf, topic: str | None = None, pattern: str | None = None
) -> None:
    subscribe_events(
        service.broker,
        topic=topic,
        pattern=pattern,
        consumer=CONSUMER,
        accepts=(),
        handler=recording_handler(topic_of=topic_of, clock=service.clock),
        sessions=service.sessions,
        # Audit never writes to the outbox, so there is nothing for the relay to wake for.
        relay=None,
        quarantine=service.quarantine,
        clock=service.clock,
    )
