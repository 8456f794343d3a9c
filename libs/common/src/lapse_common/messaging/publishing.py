"""The one way Lapse code writes raw records to Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import aiokafka
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced
from faststream.kafka import KafkaBroker
from opentelemetry import context, propagate

logger = logging.getLogger(__name__)

# aiokafka's idempotent producer stops for good on these (its sender task ends and every
# later send fails the same way); Java's client would bump the producer epoch instead. They
# happen when a broker restart loses track of a producer's sequence numbers.
_PRODUCER_DEAD = (OutOfOrderSequenceNumber, ProducerFenced)


class Publisher(Protocol):
    async def publish(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> None: ...


class PipelinedPublisher(Publisher, Protocol):
    async def send(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> Awaitable[object]:
        """Hand the record to the producer and return its delivery, which completes once the
        broker acknowledged it. Records handed over one after the other reach each partition
        in that order, so a caller can have many in flight without reordering them."""
        ...


class BrokerPublisher:
    """Publishes through a FastStream broker and waits for the broker's acknowledgement
    (acks=all), so a row is only marked published once Kafka has it.

    A producer that aiokafka has given up on is replaced by a new one (new producer id, so
    sequence numbers start again) and the failed publish raises as usual: the outbox keeps
    the row and relays it again, and consumers' inboxes drop any duplicate."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker
        self._renewing = asyncio.Lock()
        self._producer_dead = False

    async def publish(self, *, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        delivery = await self.send(topic=topic, key=key, value=value, headers=headers)
        await delivery

    async def send(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> Awaitable[object]:
        # An outbox row carries the trace context of the transaction that wrote it; the
        # relay publishes later, from its own task. Making that context current lets the
        # telemetry middleware continue the original trace instead of starting a new one.
        token = context.attach(propagate.extract(headers))
        try:
            if self._producer_dead:
                await self._renew_producer()
            # aiokafka keeps one request in flight per broker and partition, so records
            # handed over in order are stored in that order (and idempotence keeps a
            # retried batch from being stored twice).
            acknowledged = await self._broker.publish(
                value, topic, key=key.encode(), headers=dict(headers), no_confirm=True
            )
        except _PRODUCER_DEAD as error:
            self._note_dead_producer(error)
            raise
        finally:
            context.detach(token)
        return self._delivery(acknowledged)

    async def _delivery(self, acknowledged: Awaitable[object] | None) -> object:
        if acknowledged is None:
            # FastStream's in-memory test broker (unit tests of one handler) has already
            # delivered the record and returns nothing to wait on.
            return None
        try:
            return await acknowledged
        except _PRODUCER_DEAD as error:
            self._note_dead_producer(error)
            raise

    def _note_dead_producer(self, error: Exception) -> None:
        if not self._producer_dead:
            logger.warning("Kafka producer stopped for good (%r); replacing it", error)
        self._producer_dead = True

    async def _renew_producer(self) -> None:
        """Swap FastStream's aiokafka producer for a new one. If Kafka cannot be reached yet
        this raises and the next publish tries again."""
        async with self._renewing:
            if not self._producer_dead:
                return  # another publish already replaced it
            fast: Any = self._broker.config.producer
            try:
                await fast.disconnect()
            except Exception:  # the dead producer may fail to close; it is dropped anyway
                logger.debug("closing the dead Kafka producer failed", exc_info=True)
            connection: dict[str, Any] = self._broker._connection_kwargs
            await fast.connect(
                aiokafka.AIOKafkaProducer(**connection),
                serializer=fast.serializer,
                codec=fast.codec,
            )
            self._producer_dead = False
            logger.warning("Kafka producer replaced")
