"""Revocation under stress on the real system: a revoker killed again and again, a Kafka
outage, commands out of order, a dead agent next to a healthy one, overlapping grants."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from lapse_common.clock import SystemClock, as_utc
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2, request_service_pb2

from tests.infrastructure import LOCAL_KAFKA
from tests.integration.clients import StackClients, has_role, run_cli
from tests.integration.kafka_records import publish_raw
from tests.integration.local_outage import outage
from tests.integration.revocation_support import (
    SRE_ROLES,
    agent_results,
    grant_statuses,
    latest_grants,
    lifetime_after_setup,
    percentile,
    results_by_grant,
    revocation_lateness,
    submit,
    target_changes,
    wait_all,
    wait_grant,
)
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED
USERS = [f"u{i:02d}" for i in range(10)]


async def memberships(stack: LapseStack, roles: list[str]) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(stack.infra.target_admin_dsn)
    try:
        rows = await connection.fetch(
            """
            SELECT r.rolname AS role, u.rolname AS member FROM pg_auth_members m
            JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
            WHERE r.rolname = ANY($1::text[])
            """,
            roles,
        )
        return [(row["role"], row["member"]) for row in rows]
    finally:
        await connection.close()


async def bulk_requests(
    clients: StackClients, stack: LapseStack, *, resources: range, seconds: int, spread: int = 0
) -> list[str]:
    """One grant per user and resource; lifetimes `seconds` .. `seconds + spread - 1`."""
    jobs = [
        submit(
            clients,
            stack,
            user=user,
            resource=f"r{index:02d}",
            seconds=seconds + (index % spread if spread else 0),
        )
        for user in USERS
        for index in resources
    ]
    request_ids: list[str] = []
    for start in range(0, len(jobs), 50):
        request_ids += await asyncio.gather(*jobs[start : start + 50])
    return request_ids


def bulk_role_of(stack: LapseStack, grant: request_service_pb2.GrantView) -> tuple[str, str]:
    """The (role, login) a bulk grant puts in the target."""
    return stack.bulk_role(int(grant.spec.resource.removeprefix("r"))), grant.spec.principal


async def kill_revoker_while_revocations_run(
    clients: StackClients, stack: LapseStack, request_ids: list[str], rng: random.Random
) -> tuple[int, int]:
    """From just before the first grant falls due, SIGKILL the revoker at random moments
    (and restart it) until every grant is REVOKED: at least 10 times, at most 20, and, while
    revocations are left, never twice without one completing in between, so a slow machine
    still gets there (a fast one may finish them all first and take its last kills idle).
    Runs beside the setup: if granting is slower than the shortest lifetime, the kills start
    while the last grants are still being granted. Returns the number of kills, and how many
    of them came while revocations were left."""
    revoker = stack.processes["revoker"]
    dated = await wait_for(
        lambda: latest_grants(clients, stack, request_ids),
        lambda found: any(g.HasField("expires_at") for g in found.values()),
        what="the first grant to become ACTIVE",
        interval=0.5,
    )
    first_due = min(
        as_utc(g.expires_at.ToDatetime()) for g in dated.values() if g.HasField("expires_at")
    )
    await asyncio.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds() - 1))

    async def revoked_count() -> int:
        found = await grant_statuses(clients, stack, request_ids)
        return sum(status == REVOKED for status in found.values())

    kills = 0
    kills_while_revoking = 0
    done_at_last_kill = -1
    while kills < 20:
        done = await revoked_count()
        if done == len(request_ids):
            # All revoked: the remaining kills (up to 10) hit an idle revoker, which must not
            # repeat or undo anything either.
            if kills >= 10:
                break
        elif done == done_at_last_kill:
            # The restarted revoker has not finished anything since the last kill yet:
            # let it get at least one more done first (or fail saying nothing moved).
            await wait_for(
                revoked_count,
                lambda now, before=done: now > before,
                what=f"a revocation to complete after kill {kills}",
                interval=0.2,
            )
        await asyncio.sleep(rng.uniform(0.3, 2.5))
        done_at_last_kill = await revoked_count()
        revoker.kill(signal.SIGKILL)
        kills += 1
        kills_while_revoking += done_at_last_kill < len(request_ids)
        await asyncio.to_thread(stack.restart, "revoker")
    return kills, kills_while_revoking


async def test_revoker_killed_at_random_moments_loses_and_repeats_nothing(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    rng = random.Random(20261129)
    revoker = stack.processes["revoker"]
    roles = [stack.bulk_role(i) for i in range(20)]
    killer: asyncio.Task[tuple[int, int]] | None = None
    try:
        started = time.monotonic()
        # Lifetimes of 25-44 s: the 200 grants fall due over about 20 seconds.
        request_ids = await bulk_requests(
            clients, stack, resources=range(20), seconds=25, spread=20
        )
        killer = asyncio.create_task(
            kill_revoker_while_revocations_run(clients, stack, request_ids, rng)
        )
        # ACTIVE or later: on a slow machine the first grants may fall due (and be revoked)
        # before the last one is ACTIVE.
        grants = await wait_all(clients, stack, request_ids, status=ACTIVE, or_later=True)
        granted_in = time.monotonic() - started
        assert len(grants) == 200
        # Every grant is in the target now, or its removal has been reported already (read
        # after the target, so a removal the read missed is on the topic by then).
        held = set(await memberships(stack, roles))
        gone = [g for g in grants if bulk_role_of(stack, g) not in held]
        await wait_for(
            lambda: results_by_grant(stack),
            lambda found: all(
                target_changes(found.get(g.grant_id, []), common_pb2.COMMAND_KIND_REVOKE) == 1
                for g in gone
            ),
            what=f"the removal of the {len(gone)} grant(s) not in the target to be reported",
            progress=lambda found: sum(len(r) for r in found.values()),
            describe=lambda found: f"{len(found)} grants with results",
        )
        assert held <= {bulk_role_of(stack, g) for g in grants}, "only these grants are held"
        first_due = min(as_utc(g.expires_at.ToDatetime()) for g in grants)
        kills, kills_while_revoking = await killer
        grants = await wait_all(clients, stack, request_ids, status=REVOKED)
        took = time.monotonic() - started
        after_first_due = (datetime.now(UTC) - first_due).total_seconds()

        assert await memberships(stack, roles) == []
        results = await results_by_grant(stack)
        for kind, effect in (
            (common_pb2.COMMAND_KIND_GRANT, "added to"),
            (common_pb2.COMMAND_KIND_REVOKE, "removed from"),
        ):
            effects = Counter(target_changes(results.get(g.grant_id, []), kind) for g in grants)
            assert effects == Counter({1: 200}), f"every grant {effect} the target exactly once"
    finally:
        if killer is not None and not killer.done():
            killer.cancel()
        if revoker.process is None or revoker.process.poll() is not None:
            stack.restart("revoker")
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[crash] 200 grants (granted in {granted_in:.1f}s, {len(gone)} already revoked "
            f"by then), revoker SIGKILLed {kills} times "
            f"({kills_while_revoking} while revocations were left); all REVOKED {after_first_due:.1f}s "
            f"after the first fell due ({took:.1f}s for the whole test)"
        )


def _kafka_is_ours(stack: LapseStack) -> bool:
    return stack.infra.kafka_bootstrap == LOCAL_KAFKA


async def test_kafka_outage_while_grants_fall_due_loses_nothing(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    if not _kafka_is_ours(stack):
        pytest.skip(
            "Kafka is not the broker deploy/local/kafka.sh runs, so this test cannot stop it"
        )
    clients = StackClients(stack)
    try:
        request_ids = list(
            await asyncio.gather(
                *(
                    submit(clients, stack, user=user, permission="write", seconds=15)
                    for user in USERS
                )
            )
        )
        grants = await wait_all(clients, stack, request_ids, status=ACTIVE)
        # The broker stays down until every grant has fallen due (and a few seconds more),
        # however long granting took here.
        last_due = max(as_utc(g.expires_at.ToDatetime()) for g in grants)
        down_for = max(10.0, (last_due - datetime.now(UTC)).total_seconds() + 5)
        async with outage("kafka.sh", seconds=down_for) as down:
            grants = await wait_all(clients, stack, request_ids, status=REVOKED)
            recovered = time.monotonic() - down.back_at
        logins = [stack.login_for(u) for u in USERS]
        assert [m for m in await memberships(stack, [stack.write_role]) if m[1] in logins] == []
        assert all(g.history[-1].status == "REVOKED" for g in grants)
        fell_due_while_down = sum(
            down.stopped_at_wall <= as_utc(g.expires_at.ToDatetime()) <= down.back_at_wall
            for g in grants
        )
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[outage] broker down {down.lasted:.0f}s while {fell_due_while_down} of 10 grants "
            f"fell due; all REVOKED {recovered:.1f}s after it came back"
        )


def signed(stack: LapseStack, *, grant_id: str, epoch: int, kind: int, principal: str) -> bytes:
    signer = CommandSigner(
        private_key_pem=stack.signing_key.read_bytes(),
        clock=SystemClock(),
        ttl=timedelta(minutes=5),
    )
    command = signer.sign(
        commands_pb2.AgentCommand(
            command_id=f"cmd-{uuid.uuid4()}",
            grant_id=grant_id,
            epoch=epoch,
            kind=kind,  # type: ignore[arg-type]
            spec=common_pb2.GrantSpec(
                integration_id="demo-pg",
                agent_id="demo-agent",
                resource="appdb",
                permission="write",
                principal=principal,
            ),
            issuer="test",
        )
    )
    envelope = build_envelope(
        command, producer="test", occurred_at=SystemClock().now(), grant_id=grant_id
    )
    return envelope.SerializeToString()


async def test_commands_out_of_order_duplicated_or_stale_end_right(stack: LapseStack) -> None:
    topic = stack.topic_prefix + "lapse.agent.demo-agent.commands.v1"
    login = stack.login_for("u05")
    grant_id = f"grant-disorder-{uuid.uuid4()}"
    revoker = stack.kafka_as("lapse-revoker")
    key = grant_id.encode()

    async def send(value: bytes) -> None:
        await publish_raw(revoker, topic, key=key, value=value)

    def command(epoch: int, kind: int) -> bytes:
        return signed(stack, grant_id=grant_id, epoch=epoch, kind=kind, principal=login)

    async def answered(count: int) -> list[events_pb2.AgentResult]:
        return await wait_for(
            lambda: agent_results(stack, grant_id),
            lambda r: len(r) >= count,
            what=f"{count} results",
        )

    # The revoke (epoch 2) overtakes its grant (epoch 1): the late grant must not run.
    await send(command(2, common_pb2.COMMAND_KIND_REVOKE))
    await send(command(1, common_pb2.COMMAND_KIND_GRANT))
    results = await answered(2)
    by_kind = {r.kind: r for r in results}
    assert by_kind[common_pb2.COMMAND_KIND_REVOKE].outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED
    assert by_kind[common_pb2.COMMAND_KIND_REVOKE].verified
    assert by_kind[common_pb2.COMMAND_KIND_GRANT].outcome == events_pb2.RESULT_OUTCOME_REJECTED
    assert "stale epoch" in by_kind[common_pb2.COMMAND_KIND_GRANT].detail
    assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)

    # A newer grant delivered twice runs once; a stale revoke after it changes nothing.
    grant = command(3, common_pb2.COMMAND_KIND_GRANT)
    await send(grant)
    await send(grant)
    await send(command(2, common_pb2.COMMAND_KIND_REVOKE))
    results = await answered(5)
    grants_run = [r for r in results if r.kind == common_pb2.COMMAND_KIND_GRANT and r.epoch == 3]
    assert sorted(r.changed for r in grants_run) == [False, True]
    assert any("duplicate" in r.detail for r in grants_run)
    assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)

    # The final revoke (epoch 4) removes it and verifies.
    await send(command(4, common_pb2.COMMAND_KIND_REVOKE))
    results = await answered(6)
    final = next(r for r in results if r.epoch == 4)
    assert final.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED and final.verified and final.changed
    assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)


@dataclass
class RevokedBatch:
    lateness: list[float]
    far: list[str]
    granted_in: float


async def revoke_batch(
    clients: StackClients, stack: LapseStack, *, far_down: bool, seconds: int
) -> RevokedBatch:
    """100 grants on the healthy agent and 10 on far-agent living `seconds`, all ACTIVE
    before the first falls due when `seconds` outlasts granting; far-agent is killed then."""
    started = time.monotonic()
    healthy = await bulk_requests(clients, stack, resources=range(10), seconds=seconds)
    far = [
        await submit(
            clients, stack, user=user, integration="far-pg", resource="fardb", seconds=seconds
        )
        for user in USERS
    ]
    await wait_all(clients, stack, [*healthy, *far], status=ACTIVE, or_later=True)
    granted_in = time.monotonic() - started
    if far_down:
        stack.processes["far-agent"].kill(signal.SIGKILL)
    revoked = await wait_all(clients, stack, healthy, status=REVOKED)
    return RevokedBatch(await revocation_lateness(stack, revoked), far, granted_in)


def agent_lines(listing: str) -> dict[str, str]:
    return {line.split()[0]: line for line in listing.splitlines() if line.strip()}


async def test_dead_agent_does_not_delay_other_agents(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    sre = stack.token("sre-1", roles=SRE_ROLES)
    try:
        first = await revoke_batch(clients, stack, far_down=False, seconds=20)
        baseline = first.lateness
        await wait_all(clients, stack, first.far, status=REVOKED)

        # Lifetimes placed after the setup as this machine paces it (measured on the first
        # batch): the dead agent's grants fall due with the healthy agent's last ones.
        second_lifetime = lifetime_after_setup(first.granted_in, at_least=20)
        second = await revoke_batch(clients, stack, far_down=True, seconds=second_lifetime)
        degraded, far = second.lateness, second.far
        # revoke_batch returned once every healthy-agent grant was REVOKED, while the dead
        # agent stayed down: none of them waited for the dead agent. (Whether its retries
        # had run out by then depends on how fast this machine is, so that is not asserted.)
        far_grants = await wait_all(clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKING)
        assert all(g.status == common_pb2.GRANT_STATUS_REVOKING for g in far_grants)
        agents = run_cli(stack, "agents", token=sre)
        assert "far-agent" in agents.stdout, agents.stderr
        # Until its heartbeat goes stale (offline after 6 s).
        listed = await wait_for(
            lambda: asyncio.to_thread(
                lambda: agent_lines(run_cli(stack, "agents", token=sre).stdout)
            ),
            lambda lines: "OFFLINE" in lines.get("far-agent", ""),
            # The listing shows heartbeat ages that change every second: not progress.
            progress=sorted,
            what="far-agent to be listed OFFLINE",
            interval=1.0,
        )
        assert "online" in listed["demo-agent"]

        # Clean up: the agent comes back and the SRE replays what got stuck meanwhile.
        await wait_all(clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKING)
        await asyncio.gather(
            *(
                wait_grant(
                    clients,
                    stack,
                    rid,
                    status=common_pb2.GRANT_STATUS_REVOKING,
                    stuck=True,
                )
                for rid in far
            )
        )
        stack.restart("far-agent")
        replayed = run_cli(stack, "revocations", "replay", "--agent", "far-agent", token=sre)
        assert replayed.returncode == 0, replayed.stderr
        await wait_all(clients, stack, far, status=REVOKED)
        assert await memberships(stack, [stack.far_role]) == []
    finally:
        far_agent = stack.processes["far-agent"]
        if far_agent.process is None or far_agent.process.poll() is not None:
            stack.restart("far-agent")
        await clients.close()
    summary = [
        f"{name}: p50 {percentile(values, 0.5):.3f}s p95 {percentile(values, 0.95):.3f}s max {max(values):.3f}s"
        for name, values in (("all agents up", baseline), ("far-agent dead", degraded))
    ]
    with capsys.disabled():
        print(
            "\n[isolation] lateness of 100 revocations on the healthy agent; "
            + "; ".join(summary)
            + f" (batches granted in {first.granted_in:.1f}s and {second.granted_in:.1f}s, "
            f"the second living {second_lifetime}s)"
        )


async def test_overlapping_grants_do_not_cut_each_other_off(stack: LapseStack) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u07")
    try:
        # The longer grant first, so the shorter one only has to be granted within its
        # lifetime (not within 5 s) for the two to overlap.
        longer = await submit(clients, stack, user="u07", permission="write", seconds=20)
        await wait_grant(clients, stack, longer, status=ACTIVE)
        shorter = await submit(clients, stack, user="u07", permission="write", seconds=5)
        both = {
            rid: await wait_grant(clients, stack, rid, status=ACTIVE, or_later=True)
            for rid in (longer, shorter)
        }
        # Whichever falls due first ends while the other is still ACTIVE.
        first, second = sorted(both, key=lambda rid: both[rid].expires_at.ToDatetime())

        ended = await wait_grant(clients, stack, first, status=REVOKED)
        assert "overlapping grant" in ended.history[-1].detail
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)

        await wait_grant(clients, stack, second, status=REVOKED)
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)
    finally:
        await clients.close()
