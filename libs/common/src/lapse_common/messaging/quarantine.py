"""lapse.quarantine.v1: where a consumer puts what it could not decode, with the reason."""

from __future__ import annotations

import logging
from typing import Any

from lapse_common.clock import Clock
from lapse_common.field_bounds import truncated
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import Publisher
from lapse_common.pb.lapse.v1 import events_pb2

logger = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, *, publisher: Publisher, topic: str, producer: str, clock: Clock) -> None:
        self._publisher = publisher
        self._topic = topic
        self._producer = producer
        self._clock = clock

    async def put(self, *, record: Any, reason: str, consumer: str) -> None:
        """Publish before the offset commits: a failed publish redelivers the original."""
        # Within QuarantinedMessage.reason's bound, so the quarantine record is never refused.
        reason = truncated(reason)
        if record.topic == self._topic:
            # Quarantining a record of the quarantine topic would write a bigger one to the
            # same topic, which its consumer would refuse again, for ever.
            logger.error(
                "%s refused %s[%s]@%s of the quarantine topic itself and skips it: %s",
                consumer,
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
            return
        key: bytes = record.key or b""
        quarantined = events_pb2.QuarantinedMessage(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            value=record.value or b"",
            reason=reason,
            consumer=consumer,
        )
        envelope = build_envelope(
            quarantined, producer=self._producer, occurred_at=self._clock.now()
        )
        logger.warning(
            "quarantined %s[%s]@%s for %s: %s",
            record.topic,
            record.partition,
            record.offset,
            consumer,
            reason,
        )
        await self._publisher.publish(
            topic=self._topic,
            key=key.decode("utf-8", errors="replace"),
            value=envelope.SerializeToString(deterministic=True),
            headers={"lapse-type": envelope.type, "lapse-quarantine-reason": reason[:200]},
        )
