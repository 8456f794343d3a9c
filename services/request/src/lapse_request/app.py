"""Wiring of the request service process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from lapse_common.access_events import AccessEventVerifier, ProducerRegistry
from lapse_common.auth import AuthInterceptor, verifier_for_service
from lapse_common.grpc_transport import GrpcTransportSettings, open_aio_channel
from lapse_common.messaging.payload_routes import on
from lapse_common.pb.lapse.v1 import (
    access_events_pb2,
    approval_service_pb2_grpc,
    events_pb2,
    request_service_pb2_grpc,
)
from lapse_common.runtime import Service
from lapse_common.service_credentials import ServiceCredentials
from lapse_common.settings import AuthSettings, DatabaseSettings
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from lapse_request.grpc_api import RequestApi
from lapse_request.handlers import RequestHandlers
from lapse_request.models import RequestBase
from lapse_request.settings import RequestSettings

# services/<name>/migrations: Alembic revisions applied at start-up.
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def run() -> None:
    settings = RequestSettings()
    auth = AuthSettings()
    verifier = verifier_for_service(auth, name="request")
    # What the request service shows the approval service instead of the caller's token.
    credentials = ServiceCredentials.from_key_file(auth.service_key_file, service="request")
    service = await Service.create(
        name="request",
        database_url=DatabaseSettings().database_url,
        metadatas=[RequestBase.metadata],
        migrations_dir=MIGRATIONS,
    )
    access_events = None
    if settings.access_event_producers_file is not None:
        # A broken registry stops start-up: silently trusting no one would drop offboardings.
        access_events = AccessEventVerifier(
            registry=ProducerRegistry.load(settings.access_event_producers_file),
            clock=service.clock,
            max_age=timedelta(seconds=settings.access_event_max_age_seconds),
        )
    handlers = RequestHandlers(
        clock=service.clock,
        topics=service.topics,
        access_events=access_events,
        agents=service.follow_agent_registry(),
    )
    service.subscribe(
        topic=service.topics.decisions,
        consumer="request-decisions",
        routes=[on(events_pb2.RequestDecided, handler=handlers.on_decision)],
    )
    service.subscribe(
        topic=service.topics.grants,
        consumer="request-grants",
        routes=[on(events_pb2.GrantStatusChanged, handler=handlers.on_grant_fact)],
    )
    service.subscribe(
        topic=service.topics.agent_heartbeats,
        consumer="request-heartbeats",
        routes=[
            on(
                events_pb2.SignedAgentReport,
                events_pb2.AgentHeartbeat,
                handler=handlers.on_heartbeat,
            )
        ],
        # Heartbeats are frequent and idempotent (latest wins): no inbox rows for them.
        deduplicate=False,
    )
    service.subscribe(
        topic=service.topics.access_events,
        consumer="request-access-events",
        routes=[on(access_events_pb2.SignedAccessEvent, handler=handlers.on_access_event)],
    )
    channel = open_aio_channel(
        settings.approval_address,
        GrpcTransportSettings(),
        interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
    )
    api = RequestApi(
        sessions=service.sessions,
        approval=approval_service_pb2_grpc.ApprovalServiceStub(channel),
        approval_timeout=settings.approval_timeout_seconds,
        credentials=credentials,
        relay=service.relay,
        topics=service.topics,
        clock=service.clock,
        offline_after=timedelta(seconds=settings.agent_offline_after_seconds),
        revocation_wait=timedelta(seconds=settings.revocation_wait_seconds),
    )

    def register(server: grpc.aio.Server) -> None:
        request_service_pb2_grpc.add_RequestServiceServicer_to_server(api, server)

    try:
        await service.run(
            grpc_servicers=[register],
            grpc_address=settings.grpc_address,
            grpc_interceptors=[AuthInterceptor(verifier)],
        )
    finally:
        await channel.close()
