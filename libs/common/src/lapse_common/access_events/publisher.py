"""Publishing access events from an internal Python service:

async with AccessEventPublisher.connect(
    kafka=KafkaSettings(), producer="hr-offboarding", private_key_pem=pem
) as publisher:
    await publisher.publish(UserOffboarded(subject="bob", reason="left"))
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from lapse_common.access_events.kinds import AccessEventPayload, partition_key
from lapse_common.access_events.signing import AccessEventSigner
from lapse_common.clock import Clock, SystemClock
from lapse_common.messaging.broker import create_broker
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import BrokerPublisher, Publisher
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics


class AccessEventPublisher:
    def __init__(
        self, *, publisher: Publisher, topics: Topics, signer: AccessEventSigner, clock: Clock
    ) -> None:
        self._publisher = publisher
        self._topic = topics.access_events
        self._signer = signer
        self._clock = clock

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        *,
        kafka: KafkaSettings,
        producer: str,
        private_key_pem: bytes,
        clock: Clock | None = None,
    ) -> AsyncIterator[AccessEventPublisher]:
        """A publisher on its own idempotent (acks=all) Kafka producer, closed on exit."""
        clock = clock or SystemClock()
        signer = AccessEventSigner(producer=producer, private_key_pem=private_key_pem, clock=clock)
        broker = create_broker(kafka, client_id=f"lapse-access-events-{producer}")
        try:
            # Inside the try: a failed connect must still close the producer it started.
            await broker.connect()
            yield cls(
                publisher=BrokerPublisher(broker),
                topics=Topics(prefix=kafka.topic_prefix),
                signer=signer,
                clock=clock,
            )
        finally:
            await broker.stop()

    async def publish(self, payload: AccessEventPayload) -> str:
        """Sign and publish one event, returning its event id once Kafka has it.

        Raises ValueError for a payload consumers would refuse (a required field empty),
        TypeError for a message that is not an access event kind.
        """
        event = self._signer.event(payload)
        # The envelope reuses the signed event id: consumers deduplicate on the envelope's
        # id and refuse a record whose two ids differ.
        envelope = build_envelope(
            self._signer.sign(event),
            producer=self._signer.producer,
            occurred_at=self._clock.now(),
            event_id=event.event_id,
        )
        headers = {"lapse-type": envelope.type, "lapse-event-id": envelope.event_id}
        headers.update(envelope.trace_context)
        await self._publisher.publish(
            topic=self._topic,
            key=partition_key(payload),
            value=envelope.SerializeToString(deterministic=True),
            headers=headers,
        )
        return event.event_id
