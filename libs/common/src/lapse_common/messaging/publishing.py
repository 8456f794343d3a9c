"""The one way Lapse code writes raw records to Kafka."""

from __future__ import annotations

from typing import Protocol

from faststream.kafka import KafkaBroker
from opentelemetry import context, propagate


class Publisher(Protocol):
    async def publish(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> None: ...


class BrokerPublisher:
    """Publishes through a FastStream broker and waits for the broker's acknowledgement
    (acks=all), so a row is only marked published once Kafka has it."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, *, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        # An outbox row carries the trace context of the transaction that wrote it; the
        # relay publishes later, from its own task. Making that context current lets the
        # telemetry middleware continue the original trace instead of starting a new one.
        token = context.attach(propagate.extract(headers))
        try:
            await self._broker.publish(value, topic, key=key.encode(), headers=dict(headers))
        finally:
            context.detach(token)
