"""gRPC AuditService: list events and verify the chain, for admins, SREs and auditors."""

from __future__ import annotations

import logging

import grpc
from lapse_common.auth import ADMIN_ROLE, SRE_ROLE, Identity, current_identity
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import audit_service_pb2, audit_service_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_audit.models import AuditEventRecord
from lapse_audit.operations.list_events import InvalidQuery, list_events
from lapse_audit.operations.verify_chain import verify_chain

AUDITOR_ROLE = "auditor"
# The log holds every request, justification and grant of every user, so reading it is
# limited to the roles whose job is to oversee all of them.
READER_ROLES = (ADMIN_ROLE, SRE_ROLE, AUDITOR_ROLE)
# Below gRPC's default 4 MiB receive limit, with room for framing.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024

logger = logging.getLogger(__name__)


class AuditApi(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def register(self, server: grpc.aio.Server) -> None:
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(self, server)

    async def ListEvents(
        self, request: audit_service_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_service_pb2.ListAuditEventsResponse:
        reader = await _require_reader(context)
        # Reading the audit log is itself worth a trace: who looked, for what.
        logger.info(
            "%s lists audit events (request_id=%r grant_id=%r type=%r after=%d limit=%d)",
            reader.subject,
            request.request_id,
            request.grant_id,
            request.type,
            request.after_sequence,
            request.limit,
        )
        try:
            async with self._sessions() as session:
                records = await list_events(
                    session,
                    request_id=request.request_id,
                    grant_id=request.grant_id,
                    event_type=request.type,
                    after_sequence=request.after_sequence,
                    limit=request.limit,
                )
        except InvalidQuery as problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
        return _response_within_size_limit([_as_message(record) for record in records])

    async def VerifyChain(
        self, request: audit_service_pb2.VerifyChainRequest, context: grpc.aio.ServicerContext
    ) -> audit_service_pb2.VerifyChainResponse:
        reader = await _require_reader(context)
        async with self._sessions() as session:
            verification = await verify_chain(session)
        logger.info("%s verified the audit chain: %s", reader.subject, verification.detail)
        return audit_service_pb2.VerifyChainResponse(
            ok=verification.ok,
            events_checked=verification.events_checked,
            first_bad_sequence=verification.first_bad_sequence,
            detail=verification.detail,
        )


async def _require_reader(context: grpc.aio.ServicerContext) -> Identity:
    try:
        identity = current_identity()
    except LookupError:
        # Only reachable if the server was built without the AuthInterceptor.
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no authenticated caller")
        raise
    if not any(identity.has_role(role) for role in READER_ROLES):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{identity.subject} may not read the audit log: it needs one of the roles "
            f"{', '.join(READER_ROLES)}",
        )
    return identity


def _response_within_size_limit(
    events: list[audit_service_pb2.AuditEvent],
) -> audit_service_pb2.ListAuditEventsResponse:
    """The leading events that fit in one response. A quarantined record can carry a
    megabyte of raw bytes, so a full page could pass gRPC's 4 MiB message limit and fail
    on the client; the caller pages on from the last sequence it got, as always."""
    response = audit_service_pb2.ListAuditEventsResponse()
    size = 0
    for event in events:
        size += event.ByteSize()
        if size > MAX_RESPONSE_BYTES and response.events:
            break
        response.events.append(event)
    return response


def _as_message(record: AuditEventRecord) -> audit_service_pb2.AuditEvent:
    event = audit_service_pb2.AuditEvent(
        sequence=record.sequence,
        event_id=record.event_id,
        type=record.type,
        topic=record.topic,
        producer=record.producer,
        request_id=record.request_id,
        grant_id=record.grant_id,
        payload_json=record.payload_json,
        hash=record.hash,
        prev_hash=record.prev_hash,
    )
    event.occurred_at.FromDatetime(as_utc(record.occurred_at))
    event.recorded_at.FromDatetime(as_utc(record.recorded_at))
    return event
