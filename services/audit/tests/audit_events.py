"""Builders of the events the audit tests feed to the service."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from lapse_common.messaging.codec import DecodedEvent, build_envelope, decode
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

OCCURRED_AT = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def wire_bytes(
    payload: Message,
    *,
    request_id: str = "",
    grant_id: str = "",
    event_id: str | None = None,
    producer: str = "test",
) -> bytes:
    envelope = build_envelope(
        payload,
        producer=producer,
        occurred_at=OCCURRED_AT,
        request_id=request_id,
        grant_id=grant_id,
        event_id=event_id,
    )
    return envelope.SerializeToString(deterministic=True)


def decoded(payload: Message, **envelope_fields: str) -> DecodedEvent:
    """An event as the consumer hands it to the handler, after a trip through the wire."""
    return decode(wire_bytes(payload, **envelope_fields))


def grant_fact(grant_id: str, request_id: str) -> events_pb2.GrantStatusChanged:
    return events_pb2.GrantStatusChanged(
        grant_id=grant_id,
        request_id=request_id,
        status=common_pb2.GRANT_STATUS_ACTIVE,
        epoch=1,
        requester="alice",
    )


def request_submitted(request_id: str) -> events_pb2.RequestSubmitted:
    return events_pb2.RequestSubmitted(
        request_id=request_id, requester="alice", flow="db-read", justification="INC-42"
    )


def signed_command(grant_id: str, agent_id: str) -> commands_pb2.SignedCommand:
    command = commands_pb2.AgentCommand(
        command_id=f"cmd-{grant_id}",
        grant_id=grant_id,
        epoch=1,
        kind=common_pb2.COMMAND_KIND_GRANT,
        spec=common_pb2.GrantSpec(
            integration_id="pg-main",
            agent_id=agent_id,
            resource="orders",
            permission="read",
            principal="alice",
        ),
    )
    return commands_pb2.SignedCommand(
        command=command.SerializeToString(deterministic=True),
        # Audit does not verify signatures, so any bytes do here.
        signature=b"not-a-real-signature",
        key_id="platform-1",
    )
