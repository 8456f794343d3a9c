"""The unit of work every gRPC method that changes state runs in: commit then wake the relay;
a refusal rolls back and ends the call with its kind's status; anything else propagates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

import grpc
import pytest
from lapse_common.clock import ManualClock
from lapse_common.messaging.outbox import OutboxMessage, OutboxRelay, enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.unit_of_work import REFUSAL_STATUS, UnitOfWork, abort_refused
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

CLOCK = ManualClock(datetime(2026, 12, 5, tzinfo=UTC))


class AbortingContext:
    """Stands in for grpc.aio.ServicerContext: `abort` records the status and raises
    AbortError, as grpc's does, so nothing after it runs."""

    def __init__(self) -> None:
        self.aborted: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self.aborted.append((code, details))
        raise grpc.aio.AbortError()


class CountingRelay(OutboxRelay):
    """A relay that only counts its wakes (it is never run)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessions=sessions, publisher=None, clock=CLOCK)  # type: ignore[arg-type]
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


@pytest.fixture
def relay(sessions: async_sessionmaker[AsyncSession]) -> CountingRelay:
    return CountingRelay(sessions)


@pytest.fixture
def work(sessions: async_sessionmaker[AsyncSession], relay: CountingRelay) -> UnitOfWork:
    return UnitOfWork(sessions, relay=relay)


def stage_event(session: AsyncSession) -> None:
    """What an operation writes: here, one event in the outbox."""
    enqueue(
        session,
        topic="lapse.requests.v1",
        key="req-1",
        payload=events_pb2.RequestCanceled(request_id="req-1", canceled_by="alice"),
        producer="request",
        clock=CLOCK,
    )


async def outbox_rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def test_a_success_commits_and_wakes_the_relay_once(
    work: UnitOfWork, relay: CountingRelay, sessions: async_sessionmaker[AsyncSession]
) -> None:
    context = AbortingContext()
    async with work(context) as session:
        stage_event(session)
    assert await outbox_rows(sessions) == 1
    assert relay.wakes == 1
    assert context.aborted == []


async def test_a_refusal_rolls_back_and_aborts_with_the_status_of_its_kind(
    work: UnitOfWork, relay: CountingRelay, sessions: async_sessionmaker[AsyncSession]
) -> None:
    context = AbortingContext()
    with pytest.raises(grpc.aio.AbortError):
        async with work(context) as session:
            stage_event(session)
            await session.flush()  # written, so the rollback has something to undo
            raise Refused(Refusal.CONFLICT, "request req-1 is already APPROVED")
    assert context.aborted == [
        (grpc.StatusCode.FAILED_PRECONDITION, "request req-1 is already APPROVED")
    ]
    assert await outbox_rows(sessions) == 0
    assert relay.wakes == 0


async def test_an_unexpected_error_propagates_rolled_back_without_abort_or_wake(
    work: UnitOfWork, relay: CountingRelay, sessions: async_sessionmaker[AsyncSession]
) -> None:
    context = AbortingContext()
    with pytest.raises(RuntimeError, match="database went away"):
        async with work(context) as session:
            stage_event(session)
            await session.flush()
            raise RuntimeError("database went away")
    assert context.aborted == []
    assert await outbox_rows(sessions) == 0
    assert relay.wakes == 0


async def test_a_transaction_hands_the_refusal_back_to_a_caller_that_reports_it(
    work: UnitOfWork, relay: CountingRelay, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(Refused, match="not stuck") as refused:
        async with work.transaction() as session:
            stage_event(session)
            await session.flush()
            raise Refused(Refusal.CONFLICT, "revocation of grant-1 is AWAITING_ACK, not stuck")
    assert refused.value.kind is Refusal.CONFLICT
    assert await outbox_rows(sessions) == 0
    assert relay.wakes == 0
    async with work.transaction() as session:
        stage_event(session)
    assert await outbox_rows(sessions) == 1
    assert relay.wakes == 1


async def test_without_a_relay_the_work_still_commits(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with UnitOfWork(sessions, relay=None)(AbortingContext()) as session:
        stage_event(session)
    assert await outbox_rows(sessions) == 1


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (Refusal.INVALID, grpc.StatusCode.INVALID_ARGUMENT),
        (Refusal.FORBIDDEN, grpc.StatusCode.PERMISSION_DENIED),
        (Refusal.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (Refusal.CONFLICT, grpc.StatusCode.FAILED_PRECONDITION),
        (Refusal.ALREADY_EXISTS, grpc.StatusCode.ALREADY_EXISTS),
        (Refusal.EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_a_refusal_before_any_work_aborts_with_the_same_status(
    kind: Refusal, code: grpc.StatusCode
) -> None:
    context = AbortingContext()
    with pytest.raises(grpc.aio.AbortError):
        await abort_refused(context, Refused(kind, "why, in words"))
    assert context.aborted == [(code, "why, in words")]


def test_every_kind_has_a_status() -> None:
    assert set(REFUSAL_STATUS) == set(Refusal)
