"""The revocation aggregate on its own: each transition sets the fields it owns and is refused
from a state the use cases never take it from; its state is stored as the same strings as
before it was an enum."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_revoker.models import (
    FINAL_STATES,
    OPEN_STATES,
    UNFINISHED_STATES,
    Revocation,
    RevocationState,
    RevocationTransitionRefused,
    RevokerBase,
)
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)


def a_revocation(state: RevocationState, **fields: object) -> Revocation:
    """A revocation in `state` with every timer and bookkeeping field set, so a test sees
    which of them a transition changes."""
    values: dict[str, object] = {
        "grant_id": "g-1",
        "request_id": "r-1",
        "requester": "alice",
        "integration_id": "demo-pg",
        "agent_id": "demo-agent",
        "resource": "appdb",
        "permission": "read",
        "principal": "alice",
        "epoch": 4,
        "reason": 1,
        "actor": "scheduler",
        "end_sessions": False,
        "state": state,
        "attempt": 2,
        "command_id": "cmd-old",
        "due_at": EARLIER,
        "deadline_at": EARLIER,
        "next_attempt_at": EARLIER,
        "last_error": "TRANSIENT: earlier failure",
        "confirmed_at": None,
        "queued_at": EARLIER,
        "dead_lettered_at": None,
        "resolved_by": "",
        "resolution_reason": "",
        "trace_context": "{}",
    }
    values.update(fields)
    return Revocation(**values)


def fields(revocation: Revocation) -> dict[str, object]:
    return {column.key: getattr(revocation, column.key) for column in Revocation.__table__.columns}


def timers(revocation: Revocation) -> tuple[datetime | None, datetime | None, datetime | None]:
    return revocation.deadline_at, revocation.next_attempt_at, revocation.queued_at


def test_the_states_keep_their_stored_strings() -> None:
    assert {state.value for state in RevocationState} == {
        "AWAITING_ACK",
        "BACKING_OFF",
        "CONFIRMED",
        "DEAD_LETTERED",
        "QUEUED",
        "CANCELED",
        "RELEASED",
    }
    assert all(state == state.name for state in RevocationState)
    assert OPEN_STATES | {RevocationState.DEAD_LETTERED} | FINAL_STATES == set(RevocationState)


def test_take_over_starts_the_attempts_of_the_newer_epoch() -> None:
    revocation = a_revocation(RevocationState.BACKING_OFF)
    revocation.take_over(epoch=7)
    assert (revocation.epoch, revocation.attempt) == (7, 0)
    # The caller sends, queues or releases it next; until then nothing else moves.
    assert revocation.state == RevocationState.BACKING_OFF
    assert timers(revocation) == (EARLIER, EARLIER, EARLIER)


@pytest.mark.parametrize("epoch", [3, 4])
def test_take_over_needs_a_newer_epoch(epoch: int) -> None:
    revocation = a_revocation(RevocationState.AWAITING_ACK)
    with pytest.raises(RevocationTransitionRefused, match="epoch"):
        revocation.take_over(epoch=epoch)
    assert revocation.epoch == 4


def test_send_waits_for_the_ack_until_the_deadline() -> None:
    revocation = a_revocation(RevocationState.QUEUED)
    revocation.send(command_id="cmd-new", deadline_at=NOW + timedelta(seconds=30))
    assert revocation.state == RevocationState.AWAITING_ACK
    assert (revocation.attempt, revocation.command_id) == (3, "cmd-new")
    assert timers(revocation) == (NOW + timedelta(seconds=30), None, None)


def test_queue_waits_for_a_slot_of_the_agent() -> None:
    revocation = a_revocation(RevocationState.BACKING_OFF)
    revocation.queue(now=NOW)
    assert revocation.state == RevocationState.QUEUED
    assert timers(revocation) == (None, None, NOW)
    assert (revocation.attempt, revocation.command_id) == (2, "cmd-old")


def test_confirm_is_the_verified_end() -> None:
    revocation = a_revocation(RevocationState.AWAITING_ACK)
    revocation.confirm(now=NOW)
    assert revocation.state == RevocationState.CONFIRMED
    assert revocation.confirmed_at == NOW
    assert timers(revocation) == (None, None, None)
    assert revocation.is_final


def test_a_late_verified_removal_confirms_a_dead_lettered_revocation() -> None:
    revocation = a_revocation(RevocationState.DEAD_LETTERED)
    revocation.confirm(now=NOW)
    assert revocation.state == RevocationState.CONFIRMED


def test_release_ends_the_claim_without_removing_anything() -> None:
    revocation = a_revocation(RevocationState.QUEUED)
    revocation.release(now=NOW)
    assert revocation.state == RevocationState.RELEASED
    assert revocation.confirmed_at == NOW
    assert timers(revocation) == (None, None, None)
    assert revocation.is_final


def test_back_off_schedules_the_next_attempt() -> None:
    revocation = a_revocation(RevocationState.AWAITING_ACK)
    revocation.back_off(error="TRANSIENT: busy", now=NOW, delay=timedelta(seconds=5))
    assert revocation.state == RevocationState.BACKING_OFF
    assert revocation.last_error == "TRANSIENT: busy"
    assert timers(revocation) == (None, NOW + timedelta(seconds=5), None)
    assert revocation.attempt == 2


def test_dead_letter_stops_retrying() -> None:
    revocation = a_revocation(RevocationState.AWAITING_ACK)
    revocation.dead_letter(error="FAILED_PERMANENT: no such role", now=NOW)
    assert revocation.state == RevocationState.DEAD_LETTERED
    assert revocation.last_error == "FAILED_PERMANENT: no such role"
    assert revocation.dead_lettered_at == NOW
    assert timers(revocation) == (None, None, None)
    assert not revocation.is_final


def test_replay_starts_a_new_epoch_with_fresh_attempts() -> None:
    revocation = a_revocation(RevocationState.DEAD_LETTERED, dead_lettered_at=EARLIER)
    revocation.replay(operator="sre-bob", reason="agent is back")
    assert (revocation.epoch, revocation.attempt, revocation.last_error) == (5, 0, "")
    assert (revocation.resolved_by, revocation.resolution_reason) == ("sre-bob", "agent is back")
    # Sent or queued by the caller next; until then it is still the stuck one.
    assert revocation.state == RevocationState.DEAD_LETTERED
    assert revocation.dead_lettered_at == EARLIER
    revocation.send(command_id="cmd-replay", deadline_at=NOW)
    assert (revocation.state, revocation.attempt) == (RevocationState.AWAITING_ACK, 1)


def test_cancel_gives_up_under_a_new_epoch() -> None:
    revocation = a_revocation(RevocationState.DEAD_LETTERED, deadline_at=None)
    revocation.cancel(operator="sre-bob", reason="target decommissioned")
    assert revocation.state == RevocationState.CANCELED
    assert revocation.epoch == 5
    assert (revocation.resolved_by, revocation.resolution_reason) == (
        "sre-bob",
        "target decommissioned",
    )
    assert revocation.confirmed_at is None
    assert timers(revocation) == (None, None, None)
    assert revocation.is_final


Transition = Callable[[Revocation], None]
TRANSITIONS: dict[str, tuple[Transition, frozenset[RevocationState]]] = {
    "take_over": (lambda r: r.take_over(epoch=99), UNFINISHED_STATES),
    "send": (lambda r: r.send(command_id="cmd-x", deadline_at=NOW), UNFINISHED_STATES),
    "queue": (lambda r: r.queue(now=NOW), UNFINISHED_STATES),
    "confirm": (lambda r: r.confirm(now=NOW), UNFINISHED_STATES),
    "release": (lambda r: r.release(now=NOW), UNFINISHED_STATES),
    "back_off": (
        lambda r: r.back_off(error="x", now=NOW, delay=timedelta(seconds=1)),
        OPEN_STATES,
    ),
    "dead_letter": (lambda r: r.dead_letter(error="x", now=NOW), OPEN_STATES),
    "replay": (
        lambda r: r.replay(operator="o", reason=""),
        frozenset({RevocationState.DEAD_LETTERED}),
    ),
    "cancel": (
        lambda r: r.cancel(operator="o", reason=""),
        frozenset({RevocationState.DEAD_LETTERED}),
    ),
}
CASES = [
    (name, state, state in allowed)
    for name, (_, allowed) in TRANSITIONS.items()
    for state in RevocationState
]


@pytest.mark.parametrize(("name", "state", "allowed"), CASES)
def test_each_transition_is_taken_only_from_its_states(
    name: str, state: RevocationState, allowed: bool
) -> None:
    transition, _ = TRANSITIONS[name]
    revocation = a_revocation(state)
    if allowed:
        transition(revocation)
        return
    before = fields(revocation)
    with pytest.raises(RevocationTransitionRefused, match=f"it is {state.value}"):
        transition(revocation)
    assert fields(revocation) == before, "a refused transition changes nothing"


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/r.db", schema="revoker")
    await create_schema(engine, schema="revoker", metadatas=[Base.metadata, RevokerBase.metadata])
    yield session_factory(engine)
    await engine.dispose()


async def test_the_state_is_stored_as_the_same_strings(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        for state in RevocationState:
            session.add(a_revocation(state, grant_id=f"g-{state.value}"))
    async with sessions() as session:
        rows = await session.execute(text("SELECT grant_id, state FROM revocations"))
        stored = {grant_id: state for grant_id, state in rows.all()}
        loaded = {
            r.grant_id: r.state for r in (await session.execute(select(Revocation))).scalars()
        }
    assert stored == {f"g-{state.value}": state.value for state in RevocationState}
    assert all(type(value) is str for value in stored.values())
    assert loaded == {f"g-{state.value}": state for state in RevocationState}
    assert all(type(state) is RevocationState for state in loaded.values())


async def test_a_row_written_before_the_enum_loads_as_its_member(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        session.add(a_revocation(RevocationState.QUEUED))
    async with sessions() as session, session.begin():
        # As the revoker wrote it when the column was a plain string.
        await session.execute(text("UPDATE revocations SET state = 'BACKING_OFF'"))
    async with sessions() as session:
        revocation = await session.get(Revocation, "g-1")
        found = await session.scalar(
            select(Revocation.grant_id).where(Revocation.state == RevocationState.BACKING_OFF)
        )
    assert revocation is not None and revocation.state is RevocationState.BACKING_OFF
    assert found == "g-1"
