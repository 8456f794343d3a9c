"""The Kafka side of requester notifications: decisions and grant facts, read by the
consumer group `<topic prefix>lapse-chatops-notifier` (replicas share the partitions).

Chatops has no database, so there is no inbox: an offset is committed after the handler
returned, so a crash redelivers (at least once) and a person may rarely get a message twice.
Nothing here may stop a partition: an undecodable message or a failing handler is logged
and skipped, and the HTTP routes never wait for Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from google.protobuf.message import Message
from lapse_common.messaging.broker import consumer_options, create_broker, require_topics
from lapse_common.messaging.codec import DecodedEvent, UndecodableMessage, decode
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics

logger = logging.getLogger(__name__)

CONSUMER_GROUP = "lapse-chatops-notifier"
RECONNECT_SECONDS = 5.0

EventHandler = Callable[[DecodedEvent[Message]], Awaitable[object]]


class RequesterFeed:
    def __init__(self, *, kafka: KafkaSettings, handle: EventHandler) -> None:
        self._kafka = kafka
        self._handle = handle
        self._topics = Topics(prefix=kafka.topic_prefix)

    @property
    def group_id(self) -> str:
        return f"{self._topics.prefix}{CONSUMER_GROUP}"

    @property
    def topics(self) -> tuple[str, str]:
        return (self._topics.decisions, self._topics.grants)

    async def on_record(self, body: bytes | None, *, topic: str, position: str = "") -> None:
        try:
            event = dataclasses.replace(decode(body), source_topic=topic)
        except UndecodableMessage as problem:
            logger.warning(
                "skipped a message on %s%s that is not a Lapse event: %s", topic, position, problem
            )
            return
        try:
            await self._handle(event)
        except Exception:
            # Redelivering would fail the same way and hold back everyone else's news.
            logger.exception("notifying about %s %s failed; skipped", event.type, event.event_id)

    def _broker(self) -> KafkaBroker:
        broker = create_broker(self._kafka, client_id="lapse-chatops", produces=False)

        # The body is taken raw: FastStream must not try to parse it as JSON or text.
        async def on_message(message: KafkaMessage) -> None:
            record = message.raw_message
            assert not isinstance(record, tuple), "read one record at a time"
            await self.on_record(
                message.body, topic=record.topic, position=f"[{record.partition}]@{record.offset}"
            )

        broker.subscriber(*self.topics, **consumer_options(group_id=self.group_id))(on_message)
        return broker

    async def run(self) -> None:
        """Consume until cancelled, connecting again while Kafka cannot be reached."""
        while True:
            broker: KafkaBroker | None = None
            try:
                # As the services do: wait for the broker (and the topics) before starting a
                # client, since a client that fails to start is never closed and leaks.
                await require_topics(self._kafka, self.topics)
                broker = self._broker()
                await broker.start()
            except Exception as error:
                logger.warning(
                    "requester notifications: Kafka at %s not reachable (%s); retrying in %.0fs",
                    self._kafka.bootstrap_servers,
                    error,
                    RECONNECT_SECONDS,
                )
                if broker is not None:
                    with contextlib.suppress(Exception):
                        await broker.stop()
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            logger.info(
                "requester notifications: reading %s as consumer group %s",
                " and ".join(self.topics),
                self.group_id,
            )
            try:
                await asyncio.Event().wait()
            finally:
                await broker.stop()
