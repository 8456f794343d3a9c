"""Handling one batch of consumed records: a transaction per partition, offsets after it.

Each partition's records in a batch are handled in one transaction that records all their
event ids in the inbox with one statement and runs the handler for those not handled
before, in offset order. Only after that commit are the partition's offsets committed,
explicitly, up to the last record handled.

A record that cannot go with the rest (its handler refuses it, or anything fails) rolls
that transaction back, and the partition's records are then handled one transaction each,
as if no batch had been: a refused record is quarantined with its reason, the others are
applied once, and at the first failure the partition stops and is read again from that
record. Nothing after a record that failed is committed, and nothing handled before it is
applied twice (the inbox knows it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent, UndecodableMessage, decode
from lapse_common.messaging.inbox import first_deliveries, first_delivery
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.messaging.payload_routes import EventHandler, Route, check_routes, handler_for
from lapse_common.messaging.quarantine import Quarantine

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

# Back-off before a failed record is read again, so a DB outage is not a hot loop.
REDELIVERY_PAUSE_SECONDS = 1.0

Record: TypeAlias = "ConsumerRecord[Any, Any]"


class RefusedMessage(Exception):
    """Raised by a handler for a message it decoded but must not act on (forged, not
    allowed, too old). Redelivering it would be refused the same way forever, so it is
    quarantined with the reason instead, and nothing the handler wrote is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Offsets(Protocol):
    """The consumer a batch came from: it reads a partition again from an offset, and
    commits offsets (aiokafka's consumer is one)."""

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class UncommittedOffsets:
    """For FastStream's in-memory test broker, which keeps no offsets."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        pass

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        pass


@dataclass(frozen=True)
class _Accepted:
    record: Record
    event: DecodedEvent[Message]
    # The route's handler, which takes exactly this payload's type.
    handler: EventHandler[Any]


@dataclass(frozen=True)
class _Undecodable:
    record: Record
    reason: str


_Screened = _Accepted | _Undecodable | None  # None: a payload type this consumer skips


@dataclass(frozen=True)
class BatchHandling:
    consumer: str
    routes: Sequence[Route]
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay | None
    quarantine: Quarantine
    clock: Clock
    deduplicate: bool

    def __post_init__(self) -> None:
        check_routes(self.routes, consumer=self.consumer)

    async def handle(self, records: Sequence[Record], *, offsets: Offsets) -> None:
        """Handle a batch (it may span partitions) and commit what was handled."""
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(
                record
            )
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        stopped = False
        for partition, partition_records in by_partition.items():
            first_unhandled = await self._handle_partition(partition_records)
            if first_unhandled is None:
                commits[partition] = OffsetAndMetadata(partition_records[-1].offset + 1, "")
                continue
            stopped = True
            offsets.seek(partition, first_unhandled)
            if first_unhandled > partition_records[0].offset:
                commits[partition] = OffsetAndMetadata(first_unhandled, "")
        if self.relay is not None:
            self.relay.wake()
        await commit_offsets(offsets, commits, consumer=self.consumer)
        if stopped:
            await asyncio.sleep(REDELIVERY_PAUSE_SECONDS)

    async def _handle_partition(self, records: Sequence[Record]) -> int | None:
        """Returns the offset of the first record not handled (to be read again), or None."""
        screened = [self._screen(record) for record in records]
        accepted = [item for item in screened if isinstance(item, _Accepted)]
        try:
            await self._apply_together(accepted)
        except Exception as error:
            if not isinstance(error, RefusedMessage):
                logger.info(
                    "%s: batch of %d rolled back (%r); handling one by one",
                    self.consumer,
                    len(accepted),
                    error,
                )
            return await self._handle_one_by_one(screened)
        for item in screened:
            if isinstance(item, _Undecodable) and not await self._quarantined(
                item.record, item.reason
            ):
                # Read again from here; what the batch applied after it is in the inbox.
                return int(item.record.offset)
        return None

    def _screen(self, record: Record) -> _Screened:
        try:
            event = dataclasses.replace(decode(record.value or b""), source_topic=record.topic)
        except UndecodableMessage as problem:
            return _Undecodable(record, problem.reason)
        handler = handler_for(self.routes, event.payload)
        if handler is None:
            return None
        return _Accepted(record, event, handler)

    async def _apply_together(self, accepted: Sequence[_Accepted]) -> None:
        if not accepted:
            return
        async with self.sessions() as session, session.begin():
            ids = [item.event.event_id for item in accepted]
            fresh = (
                await first_deliveries(
                    session, consumer=self.consumer, event_ids=ids, now=self.clock.now()
                )
                if self.deduplicate
                else None
            )
            for item in accepted:
                if fresh is not None:
                    if item.event.event_id not in fresh:
                        continue
                    fresh.discard(item.event.event_id)  # twice in one batch: handled once
                with continued_trace(item.record):
                    await item.handler(session=session, event=item.event)

    async def _handle_one_by_one(self, screened: Sequence[_Screened]) -> int | None:
        for item in screened:
            if item is None:
                continue
            if isinstance(item, _Undecodable):
                if not await self._quarantined(item.record, item.reason):
                    return int(item.record.offset)
                continue
            try:
                async with self.sessions() as session, session.begin():
                    if not self.deduplicate or await first_delivery(
                        session,
                        consumer=self.consumer,
                        event_id=item.event.event_id,
                        now=self.clock.now(),
                    ):
                        with continued_trace(item.record):
                            await item.handler(session=session, event=item.event)
            except RefusedMessage as refusal:
                # The inbox row rolled back with the rest: if the quarantine publish fails,
                # the record is read again and refused again rather than skipped.
                if not await self._quarantined(item.record, refusal.reason):
                    return int(item.record.offset)
            except Exception:
                logger.exception(
                    "%s failed on event %s; will be redelivered",
                    self.consumer,
                    item.event.event_id,
                )
                return int(item.record.offset)
        return None

    async def _quarantined(self, record: Record, reason: str) -> bool:
        try:
            await self.quarantine.put(record=record, reason=reason, consumer=self.consumer)
        except Exception:
            logger.exception(
                "%s could not quarantine %s:%d@%d; will be read again",
                self.consumer,
                record.topic,
                record.partition,
                record.offset,
            )
            return False
        return True


async def commit_offsets(
    offsets: Offsets, commits: dict[TopicPartition, OffsetAndMetadata], *, consumer: str
) -> None:
    """Commit the offsets of what was handled. A rebalance during the batch is not an
    error: the partitions' new owner reads these records again, and whatever was applied
    here is dropped on the way (an inbox, the agent's ledger)."""
    if not commits:
        return
    try:
        await offsets.commit(commits)
    except (CommitFailedError, IllegalStateError) as error:
        logger.warning(
            "%s: offsets not committed (%s); records will be redelivered", consumer, error
        )


def continued_trace(record: Record) -> AbstractContextManager[trace.Span]:
    """A span for handling one record, in the trace its producer started: a batch spans
    many traces, and what the handler publishes must carry on the record's own."""
    carrier = {key: value.decode(errors="replace") for key, value in record.headers or ()}
    return _tracer.start_as_current_span(
        "handle", context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
    )
