"""gRPC AuditService: list events, verify the chain and sign checkpoints, for admins, SREs
and auditors."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lapse_common.audit_checkpoints import (
    Checkpoint,
    CheckpointInvalid,
    parse_checkpoint,
    verify_checkpoint,
)
from lapse_common.auth import ADMIN_ROLE, SRE_ROLE, Identity, current_identity
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import audit_service_pb2, audit_service_pb2_grpc
from lapse_common.refusals import Refusal, Refused
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_audit.checkpoint_store import CheckpointStore
from lapse_audit.models import AuditEventRecord
from lapse_audit.operations.list_events import DEFAULT_LIMIT, MAX_LIMIT, list_events
from lapse_audit.operations.verify_chain import verify_chain
from lapse_audit.operations.write_checkpoint import CheckpointWriter
from lapse_audit.page_tokens import PageTokens

AUDITOR_ROLE = "auditor"
# The log holds every request, justification and grant of every user, so reading it is
# limited to the roles whose job is to oversee all of them.
READER_ROLES = (ADMIN_ROLE, SRE_ROLE, AUDITOR_ROLE)
# Below gRPC's default 4 MiB receive limit, with room for framing.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024

logger = logging.getLogger(__name__)


class AuditApi(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        checkpoints: CheckpointStore,
        writer: CheckpointWriter,
        page_tokens: PageTokens,
        log_name: str,
    ) -> None:
        self._sessions = sessions
        self._checkpoints = checkpoints
        self._writer = writer
        self._page_tokens = page_tokens
        self._log_name = log_name

    def register(self, server: grpc.aio.Server) -> None:
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(self, server)

    async def ListEvents(
        self, request: audit_service_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_service_pb2.ListAuditEventsResponse:
        reader = await _require_reader(context)
        # Reading the audit log is itself worth a trace: who looked, for what.
        logger.info(
            "%s lists audit events (request_id=%r grant_id=%r type=%r actor=%r after=%d "
            "page_size=%d token=%s)",
            reader.subject,
            request.request_id,
            request.grant_id,
            request.type,
            request.actor,
            request.after_sequence,
            request.page_size or request.limit,
            bool(request.page_token),
        )
        occurred_after = _instant(request, "occurred_after")
        occurred_before = _instant(request, "occurred_before")
        scope = _token_scope(request)
        after_sequence = request.after_sequence
        if request.page_token:
            if request.after_sequence:
                raise Refused(Refusal.INVALID, "give page_token or after_sequence, not both")
            after_sequence = self._page_tokens.read(request.page_token, query=scope)
        page_size = _page_size(request)
        async with self._sessions() as session:
            records = await list_events(
                session,
                request_id=request.request_id,
                grant_id=request.grant_id,
                event_type=request.type,
                actor=request.actor,
                occurred_after=occurred_after,
                occurred_before=occurred_before,
                after_sequence=after_sequence,
                limit=page_size,
            )
        response = _response_within_size_limit([_as_message(record) for record in records])
        if response.events and (
            len(response.events) < len(records) or len(records) >= min(page_size, MAX_LIMIT)
        ):
            response.next_page_token = self._page_tokens.issue(
                after_sequence=response.events[-1].sequence, query=scope
            )
        return response

    async def VerifyChain(
        self, request: audit_service_pb2.VerifyChainRequest, context: grpc.aio.ServicerContext
    ) -> audit_service_pb2.VerifyChainResponse:
        reader = await _require_reader(context)
        given: list[Checkpoint] = []
        if request.checkpoint_json:
            try:
                checkpoint = parse_checkpoint(request.checkpoint_json)
                verify_checkpoint(checkpoint, self._checkpoints.public_key, log=self._log_name)
            except CheckpointInvalid as problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
            given.append(checkpoint)
        # Read before the walk reads the head: a checkpoint written meanwhile would
        # otherwise be ahead of the head the walk stops at.
        stored = self._checkpoints.newest()
        async with self._sessions() as session:
            verification = await verify_chain(session, checkpoints=[*given, *stored])
        logger.info("%s verified the audit chain: %s", reader.subject, verification.detail)
        return audit_service_pb2.VerifyChainResponse(
            ok=verification.ok,
            events_checked=verification.events_checked,
            first_bad_sequence=verification.first_bad_sequence,
            detail=verification.detail,
            checkpoints_checked=verification.checkpoints_checked,
            head_sequence=verification.head_sequence,
            head_hash=verification.head_hash,
        )

    async def CreateCheckpoint(
        self, request: audit_service_pb2.CreateCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> audit_service_pb2.CreateCheckpointResponse:
        reader = await _require_reader(context)
        outcome = await self._writer.write()
        logger.info(
            "%s asked for an audit checkpoint: %s",
            reader.subject,
            outcome.refusal
            or (f"wrote {outcome.file_name}" if outcome.written else "head unchanged"),
        )
        if outcome.refusal:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"not signing: the chain fails verification: {outcome.refusal}",
            )
        if outcome.checkpoint is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the audit log is empty: nothing to sign"
            )
        assert outcome.checkpoint is not None
        return audit_service_pb2.CreateCheckpointResponse(
            checkpoint_json=outcome.checkpoint.to_json(),
            written=outcome.written,
            file_name=outcome.file_name,
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


def _page_size(request: audit_service_pb2.ListAuditEventsRequest) -> int:
    if request.page_size:
        if not 0 < request.page_size <= MAX_LIMIT:
            raise Refused(
                Refusal.INVALID,
                f"page_size must be between 1 and {MAX_LIMIT} (0 means {DEFAULT_LIMIT}), "
                f"got {request.page_size}",
            )
        return request.page_size
    # The older `limit`: 0 is the default, negative values are refused by list_events,
    # values above the maximum are capped there.
    if request.limit == 0:
        return DEFAULT_LIMIT
    return request.limit


def _instant(
    request: audit_service_pb2.ListAuditEventsRequest,
    field: Literal["occurred_after", "occurred_before"],
) -> datetime | None:
    if not request.HasField(field):
        return None
    stamp: Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise Refused(
            Refusal.INVALID,
            f"{field} must be a timestamp between years 1 and 9999 "
            f"(seconds {stamp.seconds}, nanos {stamp.nanos})",
        ) from None


def _token_scope(request: audit_service_pb2.ListAuditEventsRequest) -> dict[str, str]:
    """What a page token is bound to: every filter, so it cannot page another query."""
    return {
        "request_id": request.request_id,
        "grant_id": request.grant_id,
        "type": request.type,
        "actor": request.actor,
        "occurred_after": request.occurred_after.ToJsonString()
        if request.HasField("occurred_after")
        else "",
        "occurred_before": request.occurred_before.ToJsonString()
        if request.HasField("occurred_before")
        else "",
    }


def _response_within_size_limit(
    events: list[audit_service_pb2.AuditEvent],
) -> audit_service_pb2.ListAuditEventsResponse:
    """The leading events that fit in one response. A quarantined record can carry a
    megabyte of raw bytes, so a full page could pass gRPC's 4 MiB message limit and fail
    on the client; the caller pages on with the next page token, as always."""
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
