"""Wiring of the approval service process."""

from __future__ import annotations

from pathlib import Path

import grpc
from lapse_common.auth import AuthInterceptor, verifier_for_service
from lapse_common.messaging.payload_routes import on
from lapse_common.pb.lapse.v1 import approval_service_pb2_grpc, events_pb2
from lapse_common.runtime import Service
from lapse_common.settings import AuthSettings, DatabaseSettings

from lapse_approval.approval_timeouts import ApprovalTimeouts
from lapse_approval.grpc_api import INTERNAL_METHODS, ApprovalApi
from lapse_approval.handlers import ApprovalHandlers
from lapse_approval.live_catalog import LiveCatalog
from lapse_approval.models import ApprovalBase
from lapse_approval.settings import ApprovalSettings

# services/<name>/migrations: Alembic revisions applied at start-up.
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def run() -> None:
    settings = ApprovalSettings()
    # Accepts service credentials for audience lapse-approval (LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES).
    verifier = verifier_for_service(AuthSettings(), name="approval", service="approval")
    service = await Service.create(
        name="approval",
        database_url=DatabaseSettings().database_url,
        metadatas=[ApprovalBase.metadata],
        migrations_dir=MIGRATIONS,
    )
    # Refuse to start on a broken flow file rather than serve a half-read policy.
    catalog = await LiveCatalog.load(
        sessions=service.sessions, bootstrap=settings.flow_paths(), clock=service.clock
    )
    handlers = ApprovalHandlers(catalog=catalog, topics=service.topics, clock=service.clock)
    service.subscribe(
        topic=service.topics.requests,
        consumer="approval",
        routes=[
            on(events_pb2.RequestSubmitted, handler=handlers.on_request_submitted),
            on(events_pb2.RequestCanceled, handler=handlers.on_request_canceled),
        ],
    )
    service.subscribe(
        topic=service.topics.grants,
        consumer="approval-grants",
        routes=[on(events_pb2.GrantStatusChanged, handler=handlers.on_grant_fact)],
    )
    service.background.append(
        ApprovalTimeouts(
            sessions=service.sessions,
            relay=service.relay,
            topics=service.topics,
            clock=service.clock,
        ).run
    )

    def register(server: grpc.aio.Server) -> None:
        approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server(
            ApprovalApi(
                catalog,
                sessions=service.sessions,
                relay=service.relay,
                topics=service.topics,
                clock=service.clock,
            ),
            server,
        )

    await service.run(
        grpc_servicers=[register],
        grpc_address=settings.grpc_address,
        grpc_interceptors=[AuthInterceptor(verifier, internal_methods=INTERNAL_METHODS)],
    )
