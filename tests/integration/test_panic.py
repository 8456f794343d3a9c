"""The panic button on a stack of its own (three agents, a thousand grants), so revoking
everything cannot disturb the other tests: every grant ends REVOKED with no role left in the
targets; with one agent down, the others' grants are revoked and the down agent's are
reported and end up in the stuck-revocation tooling."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from lapse_common.pb.lapse.v1 import audit_service_pb2, common_pb2, request_service_pb2

from tests.conftest import running_stack
from tests.infrastructure import Infrastructure
from tests.integration.clients import StackClients, bearer, run_cli
from tests.integration.revocation_support import submit
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AGENTS = ("demo-agent", "agent-b", "agent-c")
INTEGRATIONS = {"demo-agent": "demo-pg", "agent-b": "agent-b-pg", "agent-c": "agent-c-pg"}
USERS = tuple(f"q{i:02d}" for i in range(34))
RESOURCES = tuple(f"r{i:02d}" for i in range(10))


@pytest.fixture(scope="module")
def panic_stack(
    infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LapseStack]:
    yield from running_stack(
        LapseStack(
            infra=infra,
            workdir=Path(tmp_path_factory.mktemp("panic")),
            users=USERS,
            bulk_resources=len(RESOURCES),
            extra_agents=AGENTS[1:],
            # The ack deadline must cover the commands in flight ahead of one: 20 per agent.
            # The agents now run 4 at once and are not what is slow; the revoker handling the
            # results is, and with 50 in flight on a loaded machine (other work on both
            # cores) it re-sent about 100 commands per agent whose answers it had not read
            # in time. Short enough that the down agent's revocations are dead-lettered
            # within about 35 s.
            extra_env={
                "LAPSE_REVOKER_ACK_DEADLINE_SECONDS": "10",
                "LAPSE_REVOKER_MAX_IN_FLIGHT_PER_AGENT": "20",
                "LAPSE_REVOKER_MAX_ATTEMPTS": "3",
                "LAPSE_REVOKER_BACKOFF_INITIAL_SECONDS": "1",
                "LAPSE_REVOKER_BACKOFF_MAX_SECONDS": "2",
                "LAPSE_REVOKER_AGENT_OFFLINE_AFTER_SECONDS": "6",
                "LAPSE_REQUEST_AGENT_OFFLINE_AFTER_SECONDS": "6",
            },
        )
    )


def roles_of(stack: LapseStack) -> list[str]:
    return [stack.bulk_role(i) for i in range(len(RESOURCES))] + [
        stack.extra_role(agent, i) for agent in AGENTS[1:] for i in range(len(RESOURCES))
    ]


async def memberships(stack: LapseStack, roles: list[str] | None = None) -> int:
    """Grants that exist in the targets right now (logins in the run's roles)."""
    connection = await asyncpg.connect(stack.infra.target_admin_dsn)
    try:
        count = await connection.fetchval(
            """SELECT count(*) FROM pg_auth_members m
                 JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                WHERE r.rolname = ANY($1::text[]) AND u.rolname = ANY($2::text[])""",
            roles or roles_of(stack),
            stack.logins(),
        )
    finally:
        await connection.close()
    return int(count)


async def grant_everyone(
    clients: StackClients, stack: LapseStack, users: tuple[str, ...], resources: tuple[str, ...]
) -> int:
    """One grant per user, resource and agent, submitted 16 at a time."""
    gate = asyncio.Semaphore(16)
    items = [
        (user, resource, agent) for user in users for resource in resources for agent in AGENTS
    ]

    async def one(user: str, resource: str, agent: str) -> None:
        async with gate:
            await submit(
                clients,
                stack,
                user=user,
                resource=resource,
                integration=INTEGRATIONS[agent],
                seconds=3600,
            )

    await asyncio.gather(*(one(*item) for item in items))
    return len(items)


async def preview_all(clients: StackClients, admin: str) -> request_service_pb2.RevocationPreview:
    preview: request_service_pb2.RevocationPreview = await clients.requests.PreviewRevocation(
        request_service_pb2.ScopedRevocationRequest(
            scope=common_pb2.AccessScope(everything=True), panic=True
        ),
        metadata=bearer(admin),
    )
    return preview


async def test_panic_revokes_a_thousand_grants_on_three_agents(
    panic_stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = panic_stack
    clients = StackClients(stack)
    admin = stack.token("incident-commander", roles=("admin",))
    try:
        started = time.monotonic()
        total = await grant_everyone(clients, stack, USERS, RESOURCES)
        assert total >= 1000
        await wait_for(
            lambda: preview_all(clients, admin),
            lambda p: p.grants == total,
            progress=lambda p: p.grants,
            interval=1.0,
            what=f"{total} ACTIVE grants",
        )
        granted_in = time.monotonic() - started
        assert await memberships(stack) == total
        preview = await preview_all(clients, admin)
        assert {a.agent_id: a.grants for a in preview.per_agent} == {
            agent: total // 3 for agent in AGENTS
        }
        assert all(a.online for a in preview.per_agent)

        # Refused for anyone but an admin, whatever the scope.
        refused = run_cli(
            stack, "panic", "--everything", "--reason", "x", "--yes", token=stack.token("q00")
        )
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr

        gone_at: list[float] = []

        async def watch_target(since: float) -> None:
            await wait_for(
                lambda: memberships(stack),
                lambda left: left == 0,
                progress=lambda left: left,
                interval=0.2,
                what="every role gone from the targets",
            )
            gone_at.append(time.monotonic() - since)

        confirmed_at = time.monotonic()
        watcher = asyncio.create_task(watch_target(confirmed_at))
        pressed = await asyncio.to_thread(
            run_cli,
            stack,
            "panic",
            "--everything",
            "--reason",
            "suspected credential leak",
            "--yes",
            # Followed until every grant is confirmed or has run out of retries, however
            # long this machine takes; the CLI reports the run as it moves.
            "--wait",
            "1800",
            token=admin,
        )
        reported_in = time.monotonic() - confirmed_at
        await watcher
        assert pressed.returncode == 0, pressed.stdout + pressed.stderr
        assert f"PANIC: revoke {total} active grant(s) of {len(USERS)} user(s)" in pressed.stdout
        assert f"all {total} grant(s) revoked and confirmed by their agents" in pressed.stdout
        assert await memberships(stack) == 0
        after = await preview_all(clients, admin)
        assert after.grants == 0
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[panic] {total} grants on {len(AGENTS)} agents (granted in {granted_in:.1f}s); "
            f"from confirmation: last role gone from the targets after {gone_at[0]:.1f}s, "
            f"CLI reported all {total} confirmed after {reported_in:.1f}s"
        )


async def test_panic_with_an_agent_down_reports_it_and_leaves_it_to_the_stuck_tooling(
    panic_stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = panic_stack
    clients = StackClients(stack)
    admin = stack.token("incident-commander", roles=("admin",))
    sre = stack.token("sre-1", roles=("sre",))
    users, resources = USERS[:3], RESOURCES[:2]
    down_roles = [stack.extra_role("agent-c", RESOURCES.index(r)) for r in resources]
    try:
        total = await grant_everyone(clients, stack, users, resources)
        await wait_for(
            lambda: preview_all(clients, admin),
            lambda p: p.grants == total,
            progress=lambda p: p.grants,
            what=f"{total} ACTIVE grants",
        )
        stack.processes["agent-c"].kill()
        await wait_for(
            lambda: preview_all(clients, admin),
            lambda p: any(a.agent_id == "agent-c" and not a.online for a in p.per_agent),
            what="agent-c to show offline",
        )
        started = time.monotonic()
        pressed = await asyncio.to_thread(
            run_cli,
            stack,
            "panic",
            "--everything",
            "--reason",
            "agent-c host compromised",
            "--lockdown",
            "--yes",
            "--wait",
            "1800",
            token=admin,
        )
        took = time.monotonic() - started
        per_agent = total // 3
        assert pressed.returncode == 3, pressed.stdout + pressed.stderr
        assert "agent agent-c" in pressed.stdout and "OFFLINE" in pressed.stdout
        assert f"{total - per_agent} of {total} confirmed; {per_agent} not confirmed" in (
            pressed.stdout
        )
        assert "agents offline: agent-c" in pressed.stdout
        assert "lapse revocations stuck" in pressed.stdout
        # The healthy agents' grants are gone; the down agent's are still in its target.
        assert await memberships(stack) == per_agent
        assert await memberships(stack, down_roles) == per_agent

        stuck = run_cli(stack, "revocations", "stuck", "--agent", "agent-c", token=sre)
        assert stuck.returncode == 0, stuck.stderr
        unconfirmed = [
            line.split()[0]
            for line in pressed.stdout.splitlines()
            if "lapse revocations show" in line
        ]
        assert len(unconfirmed) == per_agent
        assert all(grant_id in stuck.stdout for grant_id in unconfirmed)

        # The lockdown refuses new requests until an admin lifts it.
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await submit(clients, stack, user=users[0], resource="r05", seconds=60)
        assert locked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "agent-c host compromised" in (locked.value.details() or "")
        found = re.search(r"lockdown (ld-\w+) in force", pressed.stdout)
        assert found, pressed.stdout
        lockdown_id = found.group(1)
        lifted = run_cli(stack, "lockdown", "lift", lockdown_id, "--reason", "clean", token=admin)
        assert lifted.returncode == 0, lifted.stderr

        # Who pressed it and why is in the audit log.
        async def audited() -> list[dict[str, object]]:
            events = await clients.audit.ListEvents(
                audit_service_pb2.ListAuditEventsRequest(
                    type="lapse.v1.RevocationRunStarted", limit=100
                ),
                metadata=bearer(stack.token("auditor-1", roles=("auditor",))),
            )
            return [json.loads(e.payload_json) for e in events.events]

        runs = await wait_for(audited, lambda found: len(found) >= 2, what="both panics audited")
        assert any(
            r.get("actor") == "incident-commander"
            and r.get("detail") == "agent-c host compromised"
            and r.get("lockdown_id") == lockdown_id
            for r in runs
        ), runs

        # Once the agent is back, replaying them finishes the job.
        stack.restart("agent-c")
        replayed = run_cli(
            stack,
            "revocations",
            "replay",
            "--agent",
            "agent-c",
            "--reason",
            "agent back",
            token=sre,
        )
        assert replayed.returncode == 0, replayed.stderr
        await wait_for(lambda: memberships(stack), lambda n: n == 0, what="agent-c's roles gone")
    finally:
        if stack.processes["agent-c"].process is None or (
            stack.processes["agent-c"].process.poll() is not None
        ):
            stack.restart("agent-c")
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[panic, agent down] {total} grants; {total - per_agent} confirmed and "
            f"{per_agent} on the down agent reported stuck {took:.1f}s after confirmation; "
            "replayed to REVOKED once it returned"
        )
