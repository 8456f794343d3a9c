"""Event consumers: decode, dedupe, handle in one DB transaction, then let the offset commit.

A handler is `async def handle(*, session, event) -> None`. It runs inside a transaction
that also records the event id in the inbox; if the event was handled before it is not
called. Messages that cannot be decoded are quarantined with the reason and skipped, and so
are messages a handler refuses by raising RefusedMessage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_common.clock import Clock
from lapse_common.messaging.broker import consumer_options
from lapse_common.messaging.codec import DecodedEvent, UndecodableMessage, decode
from lapse_common.messaging.inbox import first_delivery
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.messaging.quarantine import Quarantine

logger = logging.getLogger(__name__)

EventHandler = Callable[..., Awaitable[None]]
# Back-off before a failed message is redelivered, so a DB outage is not a hot loop.
REDELIVERY_PAUSE_SECONDS = 1.0


class RefusedMessage(Exception):
    """Raised by a handler for a message it decoded but must not act on (forged, not
    allowed, too old). Redelivering it would be refused the same way forever, so it is
    quarantined with the reason instead, and nothing the handler wrote is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def subscribe_events(
    broker: KafkaBroker,
    *,
    topic: str | Sequence[str] | None = None,
    pattern: str | None = None,
    consumer: str,
    group_id: str | None = None,
    group_prefix: str = "",
    instance_id: str = "",
    accepts: tuple[type[Message], ...],
    handler: EventHandler,
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    quarantine: Quarantine,
    clock: Clock,
    deduplicate: bool = True,
) -> None:
    """Register a transactional, idempotent handler for `accepts` payloads on a topic.

    Payload types on the topic that this consumer does not act on are acknowledged and
    skipped; only bytes that are not a Lapse message at all are quarantined.

    `deduplicate=False` skips the inbox for naturally idempotent, high-volume events
    (heartbeats). `consumer` names the inbox (which events count as handled); the Kafka group is
    `group_prefix + (group_id or consumer)`, so installations sharing a cluster under
    different topic prefixes never share consumer groups.
    """

    # The body is taken raw from the message: FastStream must not try to parse a foreign
    # JSON or text payload, since anything undecodable belongs in quarantine.
    async def on_message(message: KafkaMessage) -> None:
        record = message.raw_message
        assert not isinstance(record, tuple), "Lapse consumers read one record at a time"
        try:
            event = dataclasses.replace(decode(message.body), source_topic=record.topic)
        except UndecodableMessage as problem:
            await quarantine.put(record=record, reason=problem.reason, consumer=consumer)
            return
        if accepts and type(event.payload) not in accepts:
            return
        try:
            async with sessions() as session, session.begin():
                if not deduplicate or await first_delivery(
                    session, consumer=consumer, event_id=event.event_id, now=clock.now()
                ):
                    await handler(session=session, event=event)
        except RefusedMessage as refusal:
            # The inbox row rolled back with the rest: if the quarantine publish fails, the
            # redelivery is refused and quarantined again rather than skipped as a duplicate.
            await quarantine.put(record=record, reason=refusal.reason, consumer=consumer)
            return
        except Exception:
            logger.exception("%s failed on event %s; will be redelivered", consumer, event.event_id)
            await asyncio.sleep(REDELIVERY_PAUSE_SECONDS)
            raise
        if relay is not None:
            relay.wake()

    subscriber_args: dict[str, object] = dict(
        consumer_options(group_id=f"{group_prefix}{group_id or consumer}", instance_id=instance_id)
    )
    if pattern is not None:
        broker.subscriber(pattern=pattern, **subscriber_args)(on_message)  # type: ignore[call-overload]
    else:
        topics = [topic] if isinstance(topic, str) else list(topic or [])
        if not topics:
            raise ValueError(f"{consumer}: subscribe to at least one topic or a pattern")
        broker.subscriber(*topics, **subscriber_args)(on_message)  # type: ignore[call-overload]


__all__ = ["DecodedEvent", "EventHandler", "RefusedMessage", "subscribe_events"]
