"""The agent's own safety rules on the real stack, with commands sent straight to its
command topic (as anyone holding a command-topic credential could, or a platform whose key
or clock went wrong): a command valid for 10 years, one signed with a key the agent does
not hold, and grants or revokes for `postgres` (a superuser) or the agent's own login are
refused with the reason in a signed result, and the target is unchanged, read from
pg_roles and pg_auth_members. A normal grant and revoke still work."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_common.clock import SystemClock
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from tests.integration.clients import has_role
from tests.integration.kafka_records import publish_raw
from tests.integration.revocation_support import agent_results
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

GRANT = common_pb2.COMMAND_KIND_GRANT
REVOKE = common_pb2.COMMAND_KIND_REVOKE
SUCCEEDED = events_pb2.RESULT_OUTCOME_SUCCEEDED
FAILED_PERMANENT = events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
REJECTED = events_pb2.RESULT_OUTCOME_REJECTED
TEN_YEARS = timedelta(days=3652)
# The login the stack's agent connects to the target as (tests.infrastructure).
AGENT_LOGIN = "lapse_agent"


def platform_signer(stack: LapseStack, *, ttl: timedelta = timedelta(minutes=5)) -> CommandSigner:
    """Signs with the platform's real command key, the one the agent trusts."""
    return CommandSigner(
        private_key_pem=stack.signing_key.read_bytes(), clock=SystemClock(), ttl=ttl
    )


def stranger_signer() -> CommandSigner:
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CommandSigner(private_key_pem=key, clock=SystemClock(), ttl=timedelta(minutes=5))


async def send(
    stack: LapseStack,
    signed: commands_pb2.SignedCommand,
    *,
    grant_id: str,
) -> None:
    envelope = build_envelope(
        signed, producer="test", occurred_at=SystemClock().now(), grant_id=grant_id
    )
    await publish_raw(
        # The revoker's credential may write the agent's command topic.
        stack.kafka_as("lapse-revoker"),
        stack.topic_prefix + "lapse.agent.demo-agent.commands.v1",
        key=grant_id.encode(),
        value=envelope.SerializeToString(),
    )


def command(
    *, grant_id: str, epoch: int, kind: common_pb2.CommandKind.ValueType, principal: str
) -> commands_pb2.AgentCommand:
    return commands_pb2.AgentCommand(
        command_id=f"cmd-{uuid.uuid4()}",
        grant_id=grant_id,
        epoch=epoch,
        kind=kind,
        spec=common_pb2.GrantSpec(
            integration_id="demo-pg",
            agent_id="demo-agent",
            resource="appdb",
            permission="write",
            principal=principal,
        ),
        issuer="test",
    )


async def answer(
    stack: LapseStack,
    signer: CommandSigner,
    *,
    kind: common_pb2.CommandKind.ValueType,
    principal: str,
    grant_id: str | None = None,
    epoch: int = 1,
) -> events_pb2.AgentResult:
    """Send one signed command and wait for the agent's signed result to it."""
    grant_id = grant_id or f"grant-safety-{uuid.uuid4()}"
    sent = command(grant_id=grant_id, epoch=epoch, kind=kind, principal=principal)
    await send(stack, signer.sign(sent), grant_id=grant_id)

    async def results() -> list[events_pb2.AgentResult]:
        return [r for r in await agent_results(stack, grant_id) if r.command_id == sent.command_id]

    found = await wait_for(results, bool, what=f"the agent's answer to {sent.command_id}")
    return found[0]


RoleState = tuple[tuple[object, ...], tuple[tuple[object, ...], ...]]


async def role_state(dsn: str, name: str) -> RoleState:
    """Everything the target records about a role: its attributes and every membership
    row it is part of (as member, as granted role, or as grantor)."""
    connection = await asyncpg.connect(dsn)
    try:
        attributes = await connection.fetchrow(
            """
            SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
                   rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil
              FROM pg_roles WHERE rolname = $1
            """,
            name,
        )
        memberships = await connection.fetch(
            """
            SELECT r.rolname AS role, u.rolname AS member, g.rolname AS grantor,
                   m.admin_option
              FROM pg_auth_members m
              JOIN pg_roles r ON r.oid = m.roleid
              JOIN pg_roles u ON u.oid = m.member
              LEFT JOIN pg_roles g ON g.oid = m.grantor
             WHERE $1 IN (r.rolname, u.rolname, g.rolname)
             ORDER BY 1, 2, 3
            """,
            name,
        )
    finally:
        await connection.close()
    assert attributes is not None, f"role {name} does not exist in the target"
    return (tuple(attributes.values()), tuple(tuple(row.values()) for row in memberships))


async def test_a_ten_year_command_signed_by_the_platform_key_is_refused(
    stack: LapseStack,
) -> None:
    login = stack.login_for("a01")
    dsn = stack.infra.target_admin_dsn
    before = await role_state(dsn, login)
    result = await answer(stack, platform_signer(stack, ttl=TEN_YEARS), kind=GRANT, principal=login)
    assert result.outcome == REJECTED
    assert result.detail.startswith("rejected: command validity window is 315532800s")
    assert result.detail.endswith("longer than this agent's maximum of 900s")
    assert not await has_role(dsn, login=login, role=stack.write_role)
    assert await role_state(dsn, login) == before


async def test_a_command_signed_with_a_key_the_agent_does_not_hold_is_refused(
    stack: LapseStack,
) -> None:
    login = stack.login_for("a01")
    dsn = stack.infra.target_admin_dsn
    before = await role_state(dsn, login)
    platform_id = platform_signer(stack).key_id
    stranger = stranger_signer()
    unknown = await answer(stack, stranger, kind=GRANT, principal=login)
    assert unknown.outcome == REJECTED
    assert unknown.detail == (
        f"rejected: command is signed with key_id {stranger.key_id!r}, which is not a "
        f"platform key this agent trusts (trusted: {platform_id})"
    )
    # The same stranger naming the platform's key id: checked with that key, it fails.
    grant_id = f"grant-safety-{uuid.uuid4()}"
    forged = stranger.sign(command(grant_id=grant_id, epoch=1, kind=GRANT, principal=login))
    forged.key_id = platform_id
    await send(stack, forged, grant_id=grant_id)
    [claimed] = await wait_for(
        lambda: agent_results(stack, grant_id), bool, what="the answer to the forged command"
    )
    assert claimed.outcome == REJECTED
    assert "signature does not verify with the platform key " + platform_id in claimed.detail
    assert await role_state(dsn, login) == before


@pytest.mark.parametrize("principal", ["postgres", AGENT_LOGIN])
async def test_grants_and_revokes_for_the_superuser_or_the_agents_login_are_refused(
    stack: LapseStack, principal: str
) -> None:
    dsn = stack.infra.target_admin_dsn
    if principal == "postgres":
        # The premise: the target says postgres is a superuser.
        assert (await role_state(dsn, principal))[0][0] is True
    before = await role_state(dsn, principal)
    signer = platform_signer(stack)
    grant_id = f"grant-safety-{uuid.uuid4()}"
    granted = await answer(stack, signer, kind=GRANT, principal=principal, grant_id=grant_id)
    assert granted.outcome == FAILED_PERMANENT
    assert granted.detail.startswith(f"refused: principal {principal!r} ")
    assert (granted.changed, granted.verified) == (False, False)
    assert not await has_role(dsn, login=principal, role=stack.write_role)
    revoked = await answer(
        stack, signer, kind=REVOKE, principal=principal, grant_id=grant_id, epoch=2
    )
    assert revoked.outcome == FAILED_PERMANENT
    assert revoked.detail.startswith(f"refused: principal {principal!r} ")
    assert await role_state(dsn, principal) == before


async def test_a_normal_grant_and_revoke_still_work(stack: LapseStack) -> None:
    login = stack.login_for("a01")
    dsn = stack.infra.target_admin_dsn
    signer = platform_signer(stack, ttl=timedelta(minutes=10))  # the scheduler's default
    grant_id = f"grant-safety-{uuid.uuid4()}"
    granted = await answer(stack, signer, kind=GRANT, principal=login, grant_id=grant_id)
    assert (granted.outcome, granted.changed) == (SUCCEEDED, True), granted.detail
    assert await has_role(dsn, login=login, role=stack.write_role)
    revoked = await answer(
        stack,
        platform_signer(stack, ttl=timedelta(seconds=30)),  # the revoker's default
        kind=REVOKE,
        principal=login,
        grant_id=grant_id,
        epoch=2,
    )
    assert (revoked.outcome, revoked.changed, revoked.verified) == (SUCCEEDED, True, True)
    assert not await has_role(dsn, login=login, role=stack.write_role)
