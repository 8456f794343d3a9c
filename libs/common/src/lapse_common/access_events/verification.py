"""Verifying access events: only a registered producer's signed, fresh, allowed events
are acted on.

A consumer handler calls `verify_decoded(event)` (or `verify(signed)`); the refusal is a
RefusedMessage, so the consumer quarantines it with the reason and writes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError, Message

from lapse_common.access_events.kinds import AccessRequested, payload_of, payload_problem
from lapse_common.access_events.producer_registry import ProducerRegistry
from lapse_common.clock import Clock, as_utc
from lapse_common.field_bounds import OutOfBounds, screen
from lapse_common.messaging.codec import MAX_EVENT_ID_LENGTH, DecodedEvent
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import access_events_pb2


class AccessEventRefused(RefusedMessage):
    """The access event must not be acted on; `reason` says why."""


class AccessEventVerifier:
    def __init__(
        self,
        *,
        registry: ProducerRegistry,
        clock: Clock,
        max_age: timedelta = timedelta(minutes=10),
        max_clock_skew: timedelta = timedelta(minutes=1),
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._max_age = max_age
        self._max_clock_skew = max_clock_skew

    def verify(self, signed: access_events_pb2.SignedAccessEvent) -> access_events_pb2.AccessEvent:
        if not signed.signature:
            raise AccessEventRefused("access event is not signed")
        producer = self._registry.get(signed.key_id)
        if producer is None:
            raise AccessEventRefused(f"unknown producer key id {signed.key_id!r}")
        try:
            producer.public_key.verify(signed.signature, signed.event)
        except InvalidSignature as error:
            raise AccessEventRefused(
                f"signature does not verify with the key of producer {producer.name!r}"
            ) from error
        event = access_events_pb2.AccessEvent()
        try:
            event.ParseFromString(signed.event)
        except DecodeError as error:
            raise AccessEventRefused(f"signed bytes are not an AccessEvent: {error}") from error
        try:
            screen(event)
        except OutOfBounds as bounds:
            raise AccessEventRefused(f"access event out of bounds: {bounds}") from None
        if event.producer != producer.name:
            raise AccessEventRefused(
                f"event claims producer {event.producer!r} but is signed with key {producer.name!r}"
            )
        if not event.event_id or len(event.event_id) > MAX_EVENT_ID_LENGTH:
            raise AccessEventRefused(
                f"event_id must be 1-{MAX_EVENT_ID_LENGTH} characters, got {len(event.event_id)}"
            )
        self._check_fresh(event)
        payload = payload_of(event)
        if payload is None:
            raise AccessEventRefused("access event has no kind set")
        kind = event.WhichOneof("kind")
        if kind not in producer.events:
            raise AccessEventRefused(f"producer {producer.name!r} may not send {kind}")
        if (
            isinstance(payload, AccessRequested)
            and payload.machine_identity not in producer.machine_identities
        ):
            raise AccessEventRefused(
                f"producer {producer.name!r} may not request access as machine identity "
                f"{payload.machine_identity!r}"
            )
        problem = payload_problem(payload)
        if problem is not None:
            raise AccessEventRefused(problem)
        return event

    def verify_decoded(self, decoded: DecodedEvent[Message]) -> access_events_pb2.AccessEvent:
        """Verify a consumed record and bind its envelope to the signed event.

        The inbox deduplicates on the envelope's (unsigned) event id; requiring it to equal
        the signed event id stops a re-wrapped copy of a fresh event from being acted on
        twice within `max_age`.
        """
        if not isinstance(decoded.payload, access_events_pb2.SignedAccessEvent):
            raise AccessEventRefused(f"expected a SignedAccessEvent, got {decoded.type}")
        event = self.verify(decoded.payload)
        if decoded.event_id != event.event_id:
            raise AccessEventRefused(
                f"envelope event id {decoded.event_id!r} differs from the signed event id "
                f"{event.event_id!r}"
            )
        return event

    def _check_fresh(self, event: access_events_pb2.AccessEvent) -> None:
        if not event.HasField("issued_at"):
            raise AccessEventRefused("access event has no issued_at")
        try:
            issued_at: datetime = as_utc(event.issued_at.ToDatetime())
        except ValueError as error:
            raise AccessEventRefused(f"issued_at is invalid: {error}") from error
        now = self._clock.now()
        if issued_at < now - self._max_age:
            raise AccessEventRefused(
                f"access event issued at {issued_at.isoformat()} is older than {self._max_age}"
            )
        if issued_at > now + self._max_clock_skew:
            raise AccessEventRefused(
                f"access event issued at {issued_at.isoformat()} is in the future "
                f"(more than {self._max_clock_skew} ahead)"
            )
