"""Act on a verified access event from an internal service: offboarding ends a person's
access and pending requests, an incident presses the panic button (and locks its scope
down), its resolution lifts the lockdown, and a machine identity's request is filed like a
person's. The caller has already checked the producer's signature and rights."""

from __future__ import annotations

from lapse_common.auth import Identity
from lapse_common.clock import Clock
from lapse_common.machine_identity import machine_subject
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import access_events_pb2, approval_service_pb2, common_pb2
from lapse_common.refusals import Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import Reach
from lapse_request.models import AccessRequest
from lapse_request.operations.lift_lockdown import lift_lockdown
from lapse_request.operations.revoke_scope import revoke_scope
from lapse_request.operations.submit_request import submit_request, validate_submission


async def apply_access_event(
    *, session: AsyncSession, event: access_events_pb2.AccessEvent, topics: Topics, clock: Clock
) -> None:
    actor = f"{event.producer} (access event {event.event_id})"
    kind = event.WhichOneof("kind")
    try:
        if kind == "user_offboarded":
            offboarded = event.user_offboarded
            await revoke_scope(
                session=session,
                actor=actor,
                scope=common_pb2.AccessScope(user=offboarded.subject),
                reach=Reach(),
                reason=common_pb2.REASON_OFFBOARDING,
                detail=offboarded.reason or f"{offboarded.subject} offboarded",
                topics=topics,
                clock=clock,
                end_sessions=True,
                cancel_pending=True,
            )
        elif kind == "incident_declared":
            incident = event.incident_declared
            await revoke_scope(
                session=session,
                actor=actor,
                scope=incident.scope,
                reach=Reach(),
                reason=common_pb2.REASON_PANIC,
                detail=f"incident {incident.incident_id}"
                + (f": {incident.reason}" if incident.reason else ""),
                topics=topics,
                clock=clock,
                end_sessions=True,
                cancel_pending=True,
                lockdown=incident.lockdown,
                incident_id=incident.incident_id,
            )
        elif kind == "incident_resolved":
            resolved = event.incident_resolved
            await lift_lockdown(
                session=session,
                actor=actor,
                reason=resolved.reason or f"incident {resolved.incident_id} resolved",
                topics=topics,
                clock=clock,
                incident_id=resolved.incident_id,
            )
        elif kind == "access_requested":
            await _file_machine_request(
                session=session, asked=event.access_requested, topics=topics, clock=clock
            )
        else:
            raise RefusedMessage(f"access event {event.event_id} has no kind this service knows")
    except Refused as problem:
        # No caller to answer on Kafka: the consumer quarantines the event with the reason.
        raise RefusedMessage(f"access event {event.event_id}: {problem}") from problem


async def _file_machine_request(
    *,
    session: AsyncSession,
    asked: access_events_pb2.AccessRequested,
    topics: Topics,
    clock: Clock,
) -> AccessRequest:
    """The approval service checks the flow (requestors.machines), fills in the agent and
    the default duration, and decides, exactly as for a person's request."""
    validate_submission(
        integration_id=asked.integration_id,
        resource=asked.resource,
        permission=asked.permission,
        principal=asked.principal,
        duration_seconds=asked.duration_seconds,
        justification=asked.justification,
    )
    item = common_pb2.GrantSpec(
        integration_id=asked.integration_id,
        resource=asked.resource,
        permission=asked.permission,
        principal=asked.principal,
    )
    try:
        return await submit_request(
            session=session,
            identity=Identity(subject=machine_subject(asked.machine_identity)),
            checked=approval_service_pb2.CheckRequestResponse(
                item=item, duration_seconds=asked.duration_seconds
            ),
            justification=asked.justification,
            topics=topics,
            clock=clock,
        )
    except Refused as locked_down:
        # The lockdown's own words name it and how it ends: they need no event id prefix.
        raise RefusedMessage(str(locked_down)) from locked_down
