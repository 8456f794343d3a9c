"""Wiring of the revoker process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lapse_common.auth import AuthInterceptor, verifier_for_service
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.payload_routes import on
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.runtime import Service
from lapse_common.settings import AuthSettings, DatabaseSettings

from lapse_revoker.grpc_api import RevokerApi
from lapse_revoker.handlers import RevokerHandlers
from lapse_revoker.models import RevokerBase
from lapse_revoker.retry_loop import RetryLoop
from lapse_revoker.retry_policy import RetryPolicy
from lapse_revoker.revoker_context import RevokerContext
from lapse_revoker.revoker_metrics import RevokerMetrics
from lapse_revoker.settings import RevokerSettings

# services/<name>/migrations: Alembic revisions applied at start-up.
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def run() -> None:
    settings = RevokerSettings()
    verifier = verifier_for_service(AuthSettings(), name="revoker")
    service = await Service.create(
        name="revoker",
        database_url=DatabaseSettings().database_url,
        metadatas=[RevokerBase.metadata],
        migrations_dir=MIGRATIONS,
    )
    policy = RetryPolicy(
        ack_deadline=timedelta(seconds=settings.ack_deadline_seconds),
        max_attempts=settings.max_attempts,
        backoff_initial=timedelta(seconds=settings.backoff_initial_seconds),
        backoff_max=timedelta(seconds=settings.backoff_max_seconds),
        jitter_ratio=settings.backoff_jitter_ratio,
    )
    ctx = RevokerContext(
        # A revoke command lives only as long as its ack deadline: a later attempt carries
        # a fresh command, so an agent coming back never acts on an abandoned one.
        signer=CommandSigner(
            private_key_pem=settings.command_signing_key_file.read_bytes(),
            clock=service.clock,
            ttl=policy.ack_deadline,
        ),
        topics=service.topics,
        clock=service.clock,
        policy=policy,
        max_in_flight_per_agent=settings.max_in_flight_per_agent,
    )
    handlers = RevokerHandlers(ctx=ctx, agents=service.follow_agent_registry())
    service.subscribe(
        topic=service.topics.revoke_requests,
        consumer="revoker-requests",
        routes=[on(events_pb2.RevokeRequested, handler=handlers.on_revoke_requested)],
    )
    service.subscribe(
        topic=service.topics.agent_results,
        consumer="revoker-results",
        # Unsigned results are accepted here only to be refused (quarantined) by name.
        routes=[
            on(
                events_pb2.SignedAgentReport,
                events_pb2.AgentResult,
                handler=handlers.on_agent_result,
            )
        ],
    )
    service.subscribe(
        topic=service.topics.agent_heartbeats,
        consumer="revoker-heartbeats",
        routes=[
            on(
                events_pb2.SignedAgentReport,
                events_pb2.AgentHeartbeat,
                handler=handlers.on_heartbeat,
            )
        ],
        # Heartbeats are idempotent and frequent: no inbox rows for them.
        deduplicate=False,
    )
    service.background.append(RevokerMetrics(sessions=service.sessions, clock=service.clock).run)
    service.background.append(
        RetryLoop(
            sessions=service.sessions,
            relay=service.relay,
            ctx=ctx,
            scan_interval=settings.retry_scan_seconds,
        ).run
    )
    api = RevokerApi(
        sessions=service.sessions,
        relay=service.relay,
        ctx=ctx,
        offline_after=timedelta(seconds=settings.agent_offline_after_seconds),
    )
    await service.run(
        grpc_servicers=[api.register],
        grpc_address=settings.grpc_address,
        grpc_interceptors=[AuthInterceptor(verifier)],
    )
