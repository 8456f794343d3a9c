"""Envelope encoding and strict decoding of every Lapse message."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate

from lapse_common.field_bounds import OutOfBounds, screen
from lapse_common.pb.lapse.v1 import access_events_pb2, commands_pb2, envelope_pb2, events_pb2

# The inbox stores event ids in a String(64) column: a longer id would fail the insert on
# PostgreSQL on every redelivery and block the partition, so it is refused at decode time.
MAX_EVENT_ID_LENGTH = 64

# Every payload type a Lapse topic may carry, by its fully qualified protobuf name.
PAYLOAD_TYPES: dict[str, type[Message]] = {
    descriptor.full_name: getattr(module, name)
    for module in (events_pb2, commands_pb2, access_events_pb2)
    for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
}


class UndecodableMessage(Exception):
    """The bytes on the topic are not a Lapse envelope we can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Covariant: an event whose payload is a RequestDecided is also an event of a Message.
Payload_co = TypeVar("Payload_co", bound=Message, covariant=True)


@dataclass(frozen=True)
class DecodedEvent(Generic[Payload_co]):
    """An envelope and its payload; `DecodedEvent[X]` is an event whose payload is an X (a
    consumer hands a handler only the payload types it was subscribed for)."""

    envelope: envelope_pb2.Envelope
    payload: Payload_co
    # The topic the record was read from; empty when decoded outside a consumer.
    source_topic: str = ""

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def type(self) -> str:
        return self.envelope.type


def new_event_id() -> str:
    return str(uuid.uuid4())


def build_envelope(
    payload: Message,
    *,
    producer: str,
    occurred_at: datetime,
    request_id: str = "",
    grant_id: str = "",
    event_id: str | None = None,
) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id or new_event_id(),
        type=payload.DESCRIPTOR.full_name,
        producer=producer,
        request_id=request_id,
        grant_id=grant_id,
        payload=payload.SerializeToString(deterministic=True),
    )
    envelope.occurred_at.FromDatetime(occurred_at)
    try:
        # A consumer refuses a message out of bounds; failing here, in the transaction
        # that wanted to write it, keeps it from ever becoming a record nobody acts on.
        screen(payload)
    except OutOfBounds as problem:
        raise OutOfBounds(f"refusing to write a {envelope.type} out of bounds: {problem}") from None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    envelope.trace_context.update(carrier)
    return envelope


def decode(raw: bytes | None, *, expected: tuple[type[Message], ...] = ()) -> DecodedEvent[Message]:
    """Decode an envelope and its payload, or raise UndecodableMessage saying why."""
    if not raw:
        raise UndecodableMessage("empty message body")
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(raw)
    except DecodeError as error:
        raise UndecodableMessage(f"not a lapse.v1.Envelope: {error}") from error
    _screen_or_refuse(envelope, "envelope")
    if not envelope.event_id:
        raise UndecodableMessage("envelope has no event_id")
    if len(envelope.event_id) > MAX_EVENT_ID_LENGTH:
        raise UndecodableMessage(
            f"envelope event_id is {len(envelope.event_id)} characters long; "
            f"at most {MAX_EVENT_ID_LENGTH} are allowed"
        )
    try:
        # Handlers read occurred_at as a datetime; an out-of-range value would make every
        # redelivery fail the same way, so it is treated as undecodable.
        envelope.occurred_at.ToDatetime()
    except ValueError as error:
        raise UndecodableMessage(f"envelope occurred_at is invalid: {error}") from error
    payload_type = PAYLOAD_TYPES.get(envelope.type)
    if payload_type is None:
        raise UndecodableMessage(f"unknown payload type {envelope.type!r}")
    if expected and payload_type not in expected:
        allowed = ", ".join(t.DESCRIPTOR.full_name for t in expected)
        raise UndecodableMessage(f"payload type {envelope.type} is not one of: {allowed}")
    payload = payload_type()
    try:
        payload.ParseFromString(envelope.payload)
    except DecodeError as error:
        raise UndecodableMessage(f"payload is not a valid {envelope.type}: {error}") from error
    _screen_or_refuse(payload, envelope.type)
    return DecodedEvent(envelope=envelope, payload=payload)


def _screen_or_refuse(message: Message, what: str) -> None:
    """Every field within its bounds before any handler sees it: a record from a producer
    that is compromised or broken must not carry megabytes or NULs into tables, outbox
    rows and logs."""
    try:
        screen(message)
    except OutOfBounds as problem:
        raise UndecodableMessage(f"{what} out of bounds: {problem}") from None
