"""Transactional outbox: events are stored with the state change that causes them and
relayed to Kafka after the transaction commits, so a crash between the two loses nothing.

Rows go out in order, so one row Kafka can never take (too large, say) would hold back every
row behind it, revocations included. Such a row is set aside instead: kept with the reason,
logged, counted in `lapse.outbox.set_aside`, and the rows behind it go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from google.protobuf.message import Message
from opentelemetry import metrics
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from lapse_common.clock import Clock
from lapse_common.db import Base, dialect_of
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import PipelinedPublisher

logger = logging.getLogger(__name__)

# Errors that say this row will never be accepted, however often it is sent. Everything else
# (broker down, leader moving, ACLs not yet in place) is about the cluster, not the row, and
# is retried with the row kept in its place.
_REFUSED_FOR_GOOD = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    InvalidTimestampError,
    PolicyViolationError,
)
_SET_ASIDE_REASON_LIMIT = 1000

_set_aside_rows = metrics.get_meter("lapse.outbox").create_counter(
    "lapse.outbox.set_aside",
    description="Outbox rows Kafka refused for good, set aside so the rows behind them go out",
)


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    # Set when Kafka refused the row for good; the row is kept for operators to inspect.
    set_aside_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    set_aside_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


def enqueue(
    session: AsyncSession,
    *,
    topic: str,
    key: str,
    payload: Message,
    producer: str,
    clock: Clock,
    request_id: str = "",
    grant_id: str = "",
    extra_headers: dict[str, str] | None = None,
) -> str:
    """Stage an event in the caller's transaction; returns its event id."""
    envelope = build_envelope(
        payload,
        producer=producer,
        occurred_at=clock.now(),
        request_id=request_id,
        grant_id=grant_id,
    )
    headers = {"lapse-type": envelope.type, "lapse-event-id": envelope.event_id}
    headers.update(envelope.trace_context)
    headers.update(extra_headers or {})
    session.add(
        OutboxMessage(
            event_id=envelope.event_id,
            topic=topic,
            key=key,
            value=envelope.SerializeToString(deterministic=True),
            headers_json=json.dumps(headers),
            created_at=clock.now(),
        )
    )
    return envelope.event_id


class OutboxRelay:
    """Publishes committed outbox rows in order and marks them published.

    Runs as a background task in each service. `wake()` after a commit makes delivery
    immediate; the poll interval only bounds the delay after a crash or a missed wake.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        publisher: PipelinedPublisher,
        clock: Clock,
        batch_size: int = 200,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                relayed = await self.relay_once()
            except Exception:
                # Kafka or the DB is down: keep the rows and try again shortly.
                logger.exception("outbox relay failed; retrying")
                relayed = 0
                await asyncio.sleep(self._poll_interval)
            if relayed >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
            self._wakeup.clear()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many it handled (published or set
        aside). A failure that is about the cluster raises, after what did reach Kafka was
        marked published (so only the rest goes again)."""
        async with self._sessions() as session, session.begin():
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None), OutboxMessage.set_aside_at.is_(None))
                .order_by(OutboxMessage.id)
                .limit(self._batch_size)
            )
            if dialect_of(session) == "postgresql":
                # Replicas of a service share the outbox without publishing a row twice.
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).scalars().all()
            published, set_aside, failure = await self._publish_in_order(rows)
            if published:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(published))
                    .values(published_at=self._clock.now())
                    .execution_options(synchronize_session=False)
                )
        if failure is not None:
            raise failure
        return len(published) + set_aside

    async def _publish_in_order(
        self, rows: Sequence[OutboxMessage]
    ) -> tuple[list[int], int, Exception | None]:
        """Hand every row to the producer in order, then wait for all acknowledgements at
        once: one round trip to the broker for the batch instead of one per row. Returns the
        ids Kafka acknowledged, how many rows were set aside, and the first cluster failure
        (the rows from it on are left pending, in their order)."""
        in_flight: list[tuple[OutboxMessage, Awaitable[object]]] = []
        failure: Exception | None = None
        set_aside = 0
        for row in rows:
            try:
                delivery = await self._publisher.send(
                    topic=row.topic,
                    key=row.key,
                    value=row.value,
                    headers=json.loads(row.headers_json),
                )
            except _REFUSED_FOR_GOOD as refusal:
                self._set_aside(row, refusal)
                set_aside += 1
                continue
            except Exception as error:  # about the cluster: this row and the rest wait
                failure = error
                break
            in_flight.append((row, delivery))
        outcomes = await asyncio.gather(*(d for _, d in in_flight), return_exceptions=True)
        published: list[int] = []
        for (row, _), outcome in zip(in_flight, outcomes, strict=True):
            if isinstance(outcome, _REFUSED_FOR_GOOD):
                self._set_aside(row, outcome)
                set_aside += 1
            elif isinstance(outcome, Exception):
                failure = failure or outcome
            elif isinstance(outcome, BaseException):
                raise outcome  # cancelled: nothing is marked, every row goes again
            else:
                published.append(row.id)
        return published, set_aside, failure

    def _set_aside(self, row: OutboxMessage, refusal: Exception) -> None:
        reason = f"{type(refusal).__name__}: {refusal}"[:_SET_ASIDE_REASON_LIMIT]
        row.set_aside_at = self._clock.now()
        row.set_aside_reason = reason
        _set_aside_rows.add(1, {"topic": row.topic})
        logger.error(
            "outbox row %s (event %s, topic %s, %d bytes) refused by Kafka for good and set "
            "aside; the rows behind it go on: %s",
            row.id,
            row.event_id,
            row.topic,
            len(row.value),
            reason,
        )
