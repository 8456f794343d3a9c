"""Signing access events with a producer's Ed25519 key."""

from __future__ import annotations

from lapse_common.access_events.keys import load_private_key
from lapse_common.access_events.kinds import AccessEventPayload, payload_problem, wrap
from lapse_common.access_events.producer_registry import validate_producer_name
from lapse_common.clock import Clock
from lapse_common.messaging.codec import new_event_id
from lapse_common.pb.lapse.v1 import access_events_pb2


class AccessEventSigner:
    def __init__(self, *, producer: str, private_key_pem: bytes, clock: Clock) -> None:
        self._producer = validate_producer_name(producer)
        self._key = load_private_key(private_key_pem)
        self._clock = clock

    @property
    def producer(self) -> str:
        return self._producer

    def event(self, payload: AccessEventPayload) -> access_events_pb2.AccessEvent:
        """A fresh AccessEvent (new id, issued now) carrying `payload`.

        Raises ValueError for a payload every consumer would refuse, so the producer
        learns about it at once instead of from the quarantine topic.
        """
        problem = payload_problem(payload)
        if problem is not None:
            raise ValueError(problem)
        event = access_events_pb2.AccessEvent(event_id=new_event_id(), producer=self._producer)
        event.issued_at.FromDatetime(self._clock.now())
        wrap(event, payload)
        return event

    def sign(self, event: access_events_pb2.AccessEvent) -> access_events_pb2.SignedAccessEvent:
        body = event.SerializeToString(deterministic=True)
        return access_events_pb2.SignedAccessEvent(
            event=body, signature=self._key.sign(body), key_id=self._producer
        )
