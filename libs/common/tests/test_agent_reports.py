"""Agent reports count only when the agent's enrolled key signed them: every way of getting
that wrong is refused with a reason that says which."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.agent_reports import AgentRegistry, ReportSigner, key_id_of, refuse_replays
from lapse_common.auth import ensure_keypair
from lapse_common.clock import ManualClock
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ENROLLED = events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED


def enrolled(agent_id: str, public: Path) -> events_pb2.AgentRegistrationChanged:
    return events_pb2.AgentRegistrationChanged(
        agent_id=agent_id,
        change=ENROLLED,
        key_id=key_id_of(public.read_bytes()),
        public_key_pem=public.read_text(),
    )


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: ensure_keypair(tmp_path, name) for name in ("agent-a", "agent-b", "intruder")}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def registry(keys: dict[str, tuple[Path, Path]], clock: ManualClock) -> AgentRegistry:
    return AgentRegistry.of(
        [enrolled("agent-a", keys["agent-a"][1]), enrolled("agent-b", keys["agent-b"][1])],
        clock=clock,
    )


def signer(keys: dict[str, tuple[Path, Path]], key: str, agent_id: str) -> ReportSigner:
    return ReportSigner(agent_id=agent_id, private_key_pem=keys[key][0].read_bytes())


def result(agent_id: str = "agent-a") -> events_pb2.AgentResult:
    return events_pb2.AgentResult(
        grant_id="g-1",
        epoch=2,
        command_id="cmd-1",
        kind=common_pb2.COMMAND_KIND_REVOKE,
        outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
        verified=True,
        agent_id=agent_id,
    )


def heartbeat(agent_id: str, sent: datetime) -> events_pb2.AgentHeartbeat:
    beat = events_pb2.AgentHeartbeat(agent_id=agent_id)
    beat.sent_at.FromDatetime(sent)
    return beat


async def test_a_report_signed_by_the_enrolled_key_verifies(
    keys: dict[str, tuple[Path, Path]], registry: AgentRegistry
) -> None:
    signed = signer(keys, "agent-a", "agent-a").sign(result())
    assert await registry.verify(signed, events_pb2.AgentResult) == result()
    assert (await registry.outcome(signed)).startswith("verified: signed by agent agent-a")


async def refusal(registry: AgentRegistry, payload: object, kind: type) -> str:
    with pytest.raises(RefusedMessage) as refused:
        await registry.verify(payload, kind)  # type: ignore[arg-type]
    return refused.value.reason


async def test_unsigned_foreign_forged_and_confused_reports_are_refused(
    keys: dict[str, tuple[Path, Path]], registry: AgentRegistry
) -> None:
    kind = events_pb2.AgentResult
    assert "unsigned lapse.v1.AgentResult" in await refusal(registry, result(), kind)
    # A key nobody enrolled, claiming to be agent-a.
    intruder = signer(keys, "intruder", "agent-a").sign(result())
    assert "but its enrolled key is" in await refusal(registry, intruder, kind)
    # The right key id, bytes changed after signing.
    tampered = signer(keys, "agent-a", "agent-a").sign(result())
    tampered.report = result().SerializeToString() + b"\x10\x05"
    assert "does not verify with its enrolled key" in await refusal(registry, tampered, kind)
    # agent-b signs a result that says it comes from agent-a.
    spoof = signer(keys, "agent-b", "agent-b").sign(result(agent_id="agent-a"))
    assert "claims to come from agent 'agent-a'" in await refusal(registry, spoof, kind)
    # A heartbeat's signature offered as a result.
    beat = signer(keys, "agent-a", "agent-a").sign(heartbeat("agent-a", NOW))
    assert "where a lapse.v1.AgentResult belongs" in await refusal(registry, beat, kind)
    ghost = signer(keys, "intruder", "ghost").sign(result(agent_id="ghost"))
    assert "which is not enrolled" in await refusal(registry, ghost, kind)
    oversized = signer(keys, "agent-a", "agent-a").sign(result())
    oversized.report = b"\x00" * (64 * 1024 + 1)
    assert "is over 65536 bytes" in await refusal(registry, oversized, kind)


async def test_a_disabled_agent_or_a_rotated_key_no_longer_counts(
    keys: dict[str, tuple[Path, Path]], registry: AgentRegistry
) -> None:
    old = signer(keys, "agent-a", "agent-a").sign(result())
    # Rotation: agent-a now signs with what was the intruder's key.
    registry.apply(
        events_pb2.AgentRegistrationChanged(
            agent_id="agent-a",
            change=events_pb2.AGENT_REGISTRATION_CHANGE_KEY_ROTATED,
            key_id=key_id_of(keys["intruder"][1].read_bytes()),
            public_key_pem=keys["intruder"][1].read_text(),
        )
    )
    assert "but its enrolled key is" in await refusal(registry, old, events_pb2.AgentResult)
    new = signer(keys, "intruder", "agent-a").sign(result())
    assert await registry.verify(new, events_pb2.AgentResult) == result()
    registry.apply(
        events_pb2.AgentRegistrationChanged(
            agent_id="agent-a", change=events_pb2.AGENT_REGISTRATION_CHANGE_DISABLED
        )
    )
    assert "which is disabled" in await refusal(registry, new, events_pb2.AgentResult)


async def test_an_old_heartbeat_does_not_pass_for_a_live_agent(
    keys: dict[str, tuple[Path, Path]], registry: AgentRegistry, clock: ManualClock
) -> None:
    sign = signer(keys, "agent-b", "agent-b")
    fresh = sign.sign(heartbeat("agent-b", NOW - timedelta(seconds=30)))
    assert (await registry.verify(fresh, events_pb2.AgentHeartbeat)).agent_id == "agent-b"
    stale = sign.sign(heartbeat("agent-b", NOW - timedelta(minutes=5)))
    assert "is older than 60s" in await refusal(registry, stale, events_pb2.AgentHeartbeat)


async def test_a_signed_report_sent_again_in_a_new_envelope_is_a_replay(
    keys: dict[str, tuple[Path, Path]], sessions: async_sessionmaker[AsyncSession]
) -> None:
    signed = signer(keys, "agent-a", "agent-a").sign(result())
    async with sessions() as session, session.begin():
        await refuse_replays(session, payload=signed, consumer="revoker-results", now=NOW)
    with pytest.raises(RefusedMessage, match="^replay: this signed lapse.v1.AgentResult"):
        async with sessions() as session, session.begin():
            await refuse_replays(session, payload=signed, consumer="revoker-results", now=NOW)
    # Each consumer keeps its own record: the scheduler handles the same report once too.
    async with sessions() as session, session.begin():
        await refuse_replays(session, payload=signed, consumer="grant-scheduler-results", now=NOW)
