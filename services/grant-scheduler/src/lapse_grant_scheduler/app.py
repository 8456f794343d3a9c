"""Wiring of the grant-scheduler process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.payload_routes import on
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.runtime import Service
from lapse_common.settings import DatabaseSettings

from lapse_grant_scheduler.expiry_timer import ExpiryTimer
from lapse_grant_scheduler.handlers import SchedulerHandlers
from lapse_grant_scheduler.models import SchedulerBase
from lapse_grant_scheduler.settings import SchedulerSettings

# services/<name>/migrations: Alembic revisions applied at start-up.
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def run() -> None:
    settings = SchedulerSettings()
    service = await Service.create(
        name="grant-scheduler",
        database_url=DatabaseSettings().database_url,
        metadatas=[SchedulerBase.metadata],
        migrations_dir=MIGRATIONS,
    )
    signer = CommandSigner(
        private_key_pem=settings.command_signing_key_file.read_bytes(),
        clock=service.clock,
        ttl=timedelta(seconds=settings.command_ttl_seconds),
    )
    timer = ExpiryTimer(
        sessions=service.sessions,
        wake_relay=service.relay.wake,
        topics=service.topics,
        clock=service.clock,
        max_sleep=settings.timer_max_sleep_seconds,
        batch_size=settings.timer_batch_size,
        grant_ack_deadline=timedelta(seconds=settings.grant_ack_deadline_seconds),
    )
    handlers = SchedulerHandlers(
        signer=signer,
        topics=service.topics,
        clock=service.clock,
        timer=timer,
        expiry_notice=timedelta(seconds=settings.expiry_notice_seconds),
        agents=service.follow_agent_registry(),
    )
    service.subscribe(
        topic=service.topics.decisions,
        consumer="grant-scheduler-decisions",
        routes=[
            on(events_pb2.RequestDecided, handler=handlers.on_request_decided),
            on(events_pb2.ApprovalWithdrawn, handler=handlers.on_approval_withdrawn),
            on(events_pb2.ApprovalShortened, handler=handlers.on_approval_shortened),
            on(events_pb2.ExtensionApproved, handler=handlers.on_extension_approved),
        ],
    )
    service.subscribe(
        topic=service.topics.agent_results,
        consumer="grant-scheduler-results",
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
        topic=service.topics.end_requests,
        consumer="grant-scheduler-end-requests",
        routes=[on(events_pb2.GrantEndRequested, handler=handlers.on_end_requested)],
    )
    service.background.append(timer.run)
    await service.run()
