"""Revocation under stress on the real system: a revoker killed again and again, a Kafka
outage, commands out of order, a dead agent next to a healthy one, overlapping grants."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from lapse_common.clock import SystemClock, as_utc
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from tests.infrastructure import LOCAL_KAFKA
from tests.integration.clients import StackClients, has_role, run_cli, wait_for
from tests.integration.kafka_records import publish_raw
from tests.integration.local_outage import outage
from tests.integration.revocation_support import (
    SRE_ROLES,
    agent_results,
    grant_statuses,
    percentile,
    revocation_lateness,
    submit,
    wait_all,
    wait_grant,
)
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


async def test_revoker_killed_at_random_moments_loses_and_repeats_nothing(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    rng = random.Random(20261129)
    revoker = stack.processes["revoker"]
    try:
        started = time.monotonic()
        # Lifetimes of 25-44 s: the 200 grants fall due over about 20 seconds.
        request_ids = await bulk_requests(
            clients, stack, resources=range(20), seconds=25, spread=20
        )
        grants = await wait_all(clients, stack, request_ids, status=ACTIVE, timeout=120)
        assert len(grants) == 200
        roles = [stack.bulk_role(i) for i in range(20)]
        assert len(await memberships(stack, roles)) == 200
        first_due = min(as_utc(g.expires_at.ToDatetime()) for g in grants)
        await asyncio.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds() - 1))

        kills = 0
        deadline = time.monotonic() + 240

        async def all_revoked() -> bool:
            found = await grant_statuses(clients, stack, request_ids)
            return len(found) == len(request_ids) and set(found.values()) == {REVOKED}

        while kills < 10 or not await all_revoked():
            assert time.monotonic() < deadline, f"not all revoked after {kills} kills"
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            revoker.kill(signal.SIGKILL)
            kills += 1
            await asyncio.to_thread(stack.restart, "revoker")
        took = time.monotonic() - started
        after_first_due = (datetime.now(UTC) - first_due).total_seconds()

        assert await memberships(stack, roles) == []
        effects: Counter[str] = Counter()
        for grant in grants:
            results = await agent_results(stack, grant.grant_id)
            effects[grant.grant_id] = sum(
                1 for r in results if r.kind == common_pb2.COMMAND_KIND_REVOKE and r.changed
            )
        assert set(effects.values()) == {1}, "every grant removed from the target exactly once"
    finally:
        if revoker.process is None or revoker.process.poll() is not None:
            stack.restart("revoker")
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[crash] 200 grants, revoker SIGKILLed {kills} times; all REVOKED "
            f"{after_first_due:.1f}s after the first fell due ({took:.1f}s for the whole test)"
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
        request_ids = [
            await submit(clients, stack, user=user, permission="write", seconds=8) for user in USERS
        ]
        await wait_all(clients, stack, request_ids, status=ACTIVE, timeout=60)
        # Every grant falls due while the broker is down.
        async with outage("kafka.sh", seconds=30) as down:
            grants = await wait_all(clients, stack, request_ids, status=REVOKED, timeout=180)
            recovered = time.monotonic() - down.back_at
        logins = [stack.login_for(u) for u in USERS]
        assert [m for m in await memberships(stack, [stack.write_role]) if m[1] in logins] == []
        assert all(g.history[-1].status == "REVOKED" for g in grants)
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[outage] broker down {down.lasted:.0f}s while 10 grants fell due; "
            f"all REVOKED {recovered:.1f}s after it came back"
        )


def signed(stack: LapseStack, *, grant_id: str, epoch: int, kind: int, principal: str) -> bytes:
    signer = CommandSigner(
        private_key_pem=stack.signing_key.read_bytes(),
        key_id="platform-1",
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
    bootstrap = stack.infra.kafka_bootstrap
    key = grant_id.encode()

    async def send(value: bytes) -> None:
        await publish_raw(bootstrap, topic, key=key, value=value)

    def command(epoch: int, kind: int) -> bytes:
        return signed(stack, grant_id=grant_id, epoch=epoch, kind=kind, principal=login)

    async def answered(count: int) -> list[events_pb2.AgentResult]:
        return await wait_for(
            lambda: agent_results(stack, grant_id),
            lambda r: len(r) >= count,
            timeout=30,
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


async def revoke_batch(
    clients: StackClients, stack: LapseStack, *, far_down: bool
) -> tuple[list[float], list[str]]:
    """100 grants on the healthy agent and 10 on far-agent, all due together."""
    healthy = await bulk_requests(clients, stack, resources=range(10), seconds=20)
    far = [
        await submit(clients, stack, user=user, integration="far-pg", resource="fardb", seconds=20)
        for user in USERS
    ]
    await wait_all(clients, stack, [*healthy, *far], status=ACTIVE, timeout=90, or_later=True)
    if far_down:
        stack.processes["far-agent"].kill(signal.SIGKILL)
    revoked = await wait_all(clients, stack, healthy, status=REVOKED, timeout=90)
    return await revocation_lateness(stack, revoked), far


async def test_dead_agent_does_not_delay_other_agents(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    sre = stack.token("sre-1", roles=SRE_ROLES)
    try:
        baseline, far = await revoke_batch(clients, stack, far_down=False)
        await wait_all(clients, stack, far, status=REVOKED, timeout=60)

        degraded, far = await revoke_batch(clients, stack, far_down=True)
        # The healthy agent's revocations finished while the dead agent's were still
        # retrying: none of them is stuck yet, so nothing waited for the dead agent.
        far_grants = await wait_all(
            clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKING, timeout=5
        )
        assert not any(g.stuck for g in far_grants)
        agents = run_cli(stack, "agents", token=sre)
        assert "far-agent" in agents.stdout, agents.stderr
        await asyncio.sleep(7)  # the heartbeat goes stale (offline after 6 s)
        agents = run_cli(stack, "agents", token=sre)
        far_line = next(line for line in agents.stdout.splitlines() if line.startswith("far-agent"))
        demo_line = next(
            line for line in agents.stdout.splitlines() if line.startswith("demo-agent")
        )
        assert "OFFLINE" in far_line and "online" in demo_line

        # Clean up: the agent comes back and the SRE replays what got stuck meanwhile.
        await wait_all(clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKING, timeout=60)
        await asyncio.gather(
            *(
                wait_grant(
                    clients,
                    stack,
                    rid,
                    status=common_pb2.GRANT_STATUS_REVOKING,
                    stuck=True,
                    timeout=60,
                )
                for rid in far
            )
        )
        stack.restart("far-agent")
        replayed = run_cli(stack, "revocations", "replay", "--agent", "far-agent", token=sre)
        assert replayed.returncode == 0, replayed.stderr
        await wait_all(clients, stack, far, status=REVOKED, timeout=60)
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
            "\n[isolation] lateness of 100 revocations on the healthy agent; " + "; ".join(summary)
        )


async def test_overlapping_grants_do_not_cut_each_other_off(stack: LapseStack) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u07")
    try:
        first = await submit(clients, stack, user="u07", permission="write", seconds=5)
        await wait_grant(clients, stack, first, status=ACTIVE, timeout=30)
        second = await submit(clients, stack, user="u07", permission="write", seconds=14)
        await wait_grant(clients, stack, second, status=ACTIVE, timeout=30)

        ended = await wait_grant(clients, stack, first, status=REVOKED, timeout=30)
        assert "overlapping grant" in ended.history[-1].detail
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)

        await wait_grant(clients, stack, second, status=REVOKED, timeout=40)
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)
    finally:
        await clients.close()
