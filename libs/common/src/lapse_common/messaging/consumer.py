"""Event consumers: decode, dedupe, handle in one DB transaction, then commit the offsets.

A handler is `async def handle(*, session, event) -> None`, routed to by payload type
(`payload_routes.on`), so `event.payload` is the type it was subscribed for. It runs inside
a transaction that also records the event id in the inbox; if the event was handled before
it is not called. Records are consumed in batches (see `batch_handling`): what Kafka has
ready, up to `batch_size`, handled in one transaction per partition. Messages that cannot
be decoded are quarantined with the reason and skipped, and so are messages a handler
refuses by raising RefusedMessage.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_common.clock import Clock
from lapse_common.messaging.batch_handling import (
    BatchHandling,
    RefusedMessage,
    UncommittedOffsets,
)
from lapse_common.messaging.broker import batch_consumer_options
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.messaging.payload_routes import Route
from lapse_common.messaging.quarantine import Quarantine


def subscribe_events(
    broker: KafkaBroker,
    *,
    topic: str | Sequence[str] | None = None,
    pattern: str | None = None,
    consumer: str,
    group_id: str | None = None,
    group_prefix: str = "",
    instance_id: str = "",
    routes: Sequence[Route],
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    quarantine: Quarantine,
    clock: Clock,
    batch_size: int,
    deduplicate: bool = True,
) -> None:
    """Register transactional, idempotent handlers for the payload types on a topic, one
    route (`on(PayloadType, handler=...)`) per type or pair of types.

    Payload types on the topic that no route takes are acknowledged and skipped; only
    bytes that are not a Lapse message at all are quarantined.

    `batch_size`: records taken at once (KafkaSettings.consumer_batch_size).
    `deduplicate=False` skips the inbox for naturally idempotent, high-volume events
    (heartbeats). `consumer` names the inbox (which events count as handled); the Kafka group is
    `group_prefix + (group_id or consumer)`, so installations sharing a cluster under
    different topic prefixes never share consumer groups.
    """
    batches = BatchHandling(
        consumer=consumer,
        routes=routes,
        sessions=sessions,
        relay=relay,
        quarantine=quarantine,
        clock=clock,
        deduplicate=deduplicate,
    )

    # The bodies are taken raw from the records: FastStream must not try to parse a foreign
    # JSON or text payload, since anything undecodable belongs in quarantine.
    async def on_batch(message: KafkaMessage) -> None:
        records = message.raw_message
        # A tuple from Kafka; the in-memory test broker hands over a list.
        batch = tuple(records) if isinstance(records, tuple | list) else (records,)
        consumer = message.consumer
        offsets = consumer if isinstance(consumer, AIOKafkaConsumer) else UncommittedOffsets()
        await batches.handle(batch, offsets=offsets)

    subscriber_args: dict[str, object] = dict(
        batch_consumer_options(
            group_id=f"{group_prefix}{group_id or consumer}",
            instance_id=instance_id,
            batch_size=batch_size,
        )
    )
    if pattern is not None:
        broker.subscriber(pattern=pattern, **subscriber_args)(on_batch)  # type: ignore[call-overload]
    else:
        topics = [topic] if isinstance(topic, str) else list(topic or [])
        if not topics:
            raise ValueError(f"{consumer}: subscribe to at least one topic or a pattern")
        broker.subscriber(*topics, **subscriber_args)(on_batch)  # type: ignore[call-overload]


__all__ = ["DecodedEvent", "RefusedMessage", "subscribe_events"]
