"""The PostgreSQL connector against a real PostgreSQL (deploy/local/postgres.sh or
LAPSE_TEST_TARGET_DSN), with throwaway roles per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from lapse_agent.config import parse_config
from lapse_agent.connectors.base import Access, PermanentTargetError
from lapse_agent.connectors.postgres.connector import PostgresConnector

from services.agent.tests.integration.target_roles import (
    ScratchRoles,
    create_scratch_roles,
    direct_members,
    drop_scratch_roles,
    dsn_for_login,
    target_dsn,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dsn() -> str:
    return target_dsn()


@pytest.fixture
async def roles(dsn: str) -> AsyncIterator[ScratchRoles]:
    scratch = await create_scratch_roles(dsn)
    yield scratch
    await drop_scratch_roles(dsn, scratch)


def connector_for(dsn: str, roles: ScratchRoles, **options: object) -> PostgresConnector:
    config = parse_config(
        {
            "integrations": [
                {
                    "id": "it-pg",
                    "kind": "postgres",
                    "dsn": dsn,
                    "resources": {
                        "appdb": {
                            "permissions": {
                                "read": roles.read,
                                "write": roles.write,
                                "broken": roles.missing,
                            }
                        }
                    },
                    **options,
                }
            ]
        },
        source="test",
    )
    return PostgresConnector(config.integrations[0])


@pytest.fixture
async def connector(dsn: str, roles: ScratchRoles) -> AsyncIterator[PostgresConnector]:
    built = connector_for(dsn, roles)
    yield built
    await built.close()


async def test_grant_revoke_verify_round_trip(
    connector: PostgresConnector, roles: ScratchRoles, dsn: str
) -> None:
    access = Access(resource="appdb", permission="read", principal=roles.alice)
    assert not (await connector.verify(access)).holds

    granted = await connector.grant(access)
    assert granted.changed is True
    assert await direct_members(dsn, roles.read) == {roles.alice}
    assert (await connector.verify(access)).holds

    revoked = await connector.revoke(access)
    assert revoked.changed is True
    assert await direct_members(dsn, roles.read) == set()
    verification = await connector.verify(access)
    assert not verification.holds
    assert verification.detail == f"{roles.alice} is not a member of {roles.read}"


async def test_grant_and_revoke_are_idempotent(
    connector: PostgresConnector, roles: ScratchRoles, dsn: str
) -> None:
    access = Access(resource="appdb", permission="write", principal=roles.bob)
    assert (await connector.grant(access)).changed is True
    again = await connector.grant(access)
    assert again.changed is False
    assert "already a member" in again.note
    assert await direct_members(dsn, roles.write) == {roles.bob}

    assert (await connector.revoke(access)).changed is True
    absent = await connector.revoke(access)
    assert absent.changed is False
    assert "was not a member" in absent.note


async def test_grant_to_a_missing_login_is_permanent(
    connector: PostgresConnector, roles: ScratchRoles
) -> None:
    ghost = f"{roles.prefix}_ghost"
    with pytest.raises(PermanentTargetError, match=f"login {ghost} does not exist in target"):
        await connector.grant(Access(resource="appdb", permission="read", principal=ghost))


async def test_grant_to_a_nologin_role_is_permanent(
    connector: PostgresConnector, roles: ScratchRoles, dsn: str
) -> None:
    with pytest.raises(PermanentTargetError, match="is not a login"):
        await connector.grant(
            Access(resource="appdb", permission="read", principal=roles.group_only)
        )
    assert await direct_members(dsn, roles.read) == set()


async def test_mapped_role_missing_in_target_is_permanent(
    connector: PostgresConnector, roles: ScratchRoles
) -> None:
    access = Access(resource="appdb", permission="broken", principal=roles.alice)
    with pytest.raises(PermanentTargetError, match=f"role {roles.missing} .* does not exist"):
        await connector.grant(access)
    with pytest.raises(PermanentTargetError, match="does not exist"):
        await connector.revoke(access)


async def test_revoke_for_a_login_that_is_gone_succeeds_as_a_no_op(
    connector: PostgresConnector, roles: ScratchRoles
) -> None:
    ghost = f"{roles.prefix}_ghost"
    access = Access(resource="appdb", permission="read", principal=ghost)
    change = await connector.revoke(access)
    assert change.changed is False
    assert "does not exist in target" in change.note
    assert not (await connector.verify(access)).holds


async def test_verify_sees_only_direct_membership(
    connector: PostgresConnector, roles: ScratchRoles, dsn: str
) -> None:
    # bob -> write -> read: bob has read's privileges, but not through a grant Lapse made.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'GRANT "{roles.read}" TO "{roles.write}"')
        await conn.execute(f'GRANT "{roles.write}" TO "{roles.bob}"')
    finally:
        await conn.close()
    read = Access(resource="appdb", permission="read", principal=roles.bob)
    assert not (await connector.verify(read)).holds
    assert (await connector.verify(Access("appdb", "write", roles.bob))).holds


async def test_discover_lists_members_of_the_mapped_roles(
    connector: PostgresConnector, roles: ScratchRoles
) -> None:
    await connector.grant(Access("appdb", "read", roles.alice))
    await connector.grant(Access("appdb", "write", roles.alice))
    await connector.grant(Access("appdb", "read", roles.bob))

    everything = {
        (h.access.permission, h.access.principal, h.target_object)
        for h in await connector.discover()
    }
    assert everything == {
        ("read", roles.alice, roles.read),
        ("write", roles.alice, roles.write),
        ("read", roles.bob, roles.read),
    }
    writers = await connector.discover(resource="appdb", permission="write")
    assert [h.access.principal for h in writers] == [roles.alice]
    with pytest.raises(PermanentTargetError, match="no resource/permission matching"):
        await connector.discover(resource="billing")


@pytest.mark.parametrize(
    ("terminate_sessions_on_revoke", "end_sessions"),
    [(True, False), (False, True)],
    ids=["integration-setting", "asked-by-the-revoke"],
)
async def test_ending_sessions_on_revoke_ends_a_set_role_session(
    dsn: str, roles: ScratchRoles, terminate_sessions_on_revoke: bool, end_sessions: bool
) -> None:
    # pg_terminate_backend needs membership in the target login (or pg_signal_backend);
    # give the agent's login that for this scratch login only.
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'GRANT "{roles.alice}" TO CURRENT_USER')
    finally:
        await admin.close()
    connector = connector_for(dsn, roles, terminate_sessions_on_revoke=terminate_sessions_on_revoke)
    access = Access(resource="appdb", permission="write", principal=roles.alice)
    try:
        await connector.grant(access)
        session = await asyncpg.connect(dsn_for_login(dsn, roles.alice, roles.password))
        await session.execute(f'SET ROLE "{roles.write}"')
        change = await connector.revoke(access, end_sessions=end_sessions)
        assert change.changed is True
        assert "ended 1 session(s)" in change.note
        ended_session_errors = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
        )
        with pytest.raises(ended_session_errors):
            for _ in range(50):  # termination is asynchronous to the caller
                await session.fetchval("SELECT 1")
                await asyncio.sleep(0.1)
        session.terminate()
    finally:
        await connector.close()
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'REVOKE "{roles.alice}" FROM CURRENT_USER')
        finally:
            await admin.close()


async def test_ending_sessions_without_the_privilege_says_the_role_is_gone_but_not_them(
    connector: PostgresConnector, roles: ScratchRoles, dsn: str
) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        if await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.skip("the target login is a superuser (testcontainers): it may end any session")
    finally:
        await admin.close()
    access = Access(resource="appdb", permission="write", principal=roles.alice)
    await connector.grant(access)
    session = await asyncpg.connect(dsn_for_login(dsn, roles.alice, roles.password))
    try:
        with pytest.raises(PermanentTargetError, match="could not end the sessions") as failed:
            await connector.revoke(access, end_sessions=True)
        assert f"revoked {roles.write} from {roles.alice}" in failed.value.detail
        assert "pg_signal_backend" in failed.value.detail
        assert await direct_members(dsn, roles.write) == set()
        assert await session.fetchval("SELECT 1") == 1
    finally:
        await session.close()


async def test_privileged_principals_are_the_targets_superusers_and_the_agents_login(
    connector: PostgresConnector, dsn: str
) -> None:
    """What the execution path refuses to grant to or revoke from, read from the target."""
    target = await asyncpg.connect(dsn)
    try:
        superusers = {
            row["rolname"]
            for row in await target.fetch("SELECT rolname FROM pg_roles WHERE rolsuper")
        }
        login = await target.fetchval("SELECT current_user")
    finally:
        await target.close()
    privileged = await connector.privileged_principals()
    assert privileged.superusers == superusers
    assert "postgres" in privileged.superusers
    assert privileged.agent_logins == {login}
