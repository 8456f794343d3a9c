"""Ending live sessions on revoke, on real Kafka, PostgreSQL and agent processes.

The demo integration does not end sessions on every revoke (terminate_sessions_on_revoke
is off), so a revoke request that asks for it (`end_sessions`, what panic and offboarding
send) must carry that through the revoker to the agent, which then closes the principal's
open connection. A revoke that does not ask leaves the connection open; it only loses the
role.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from lapse_common.clock import SystemClock
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2

from tests.integration.clients import StackClients, has_role
from tests.integration.kafka_records import publish_raw
from tests.integration.revocation_support import agent_results, submit, wait_grant
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What the client sees when the server ends its session (asynchronously to the revoke).
SESSION_ENDED = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


async def active_grant_with_open_session(
    clients: StackClients, stack: LapseStack, user: str
) -> tuple[str, request_service_pb2.GrantView, asyncpg.Connection]:
    """An ACTIVE grant of `appdb read` to the user's login and a connection open as that
    login, which the agent is able to end (so whether it does is up to the revoke)."""
    login = stack.login_for(user)
    target = await asyncpg.connect(stack.infra.target_admin_dsn)
    try:
        # pg_terminate_backend needs membership in the login (or pg_signal_backend), which
        # the test stack's agent login does not have by default.
        await target.execute(f'GRANT "{login}" TO CURRENT_USER')
    finally:
        await target.close()
    request_id = await submit(clients, stack, user=user, seconds=600)
    grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
    session = await asyncpg.connect(stack.infra.target_admin_dsn, user=login, password="x")
    assert await session.fetchval("SELECT pg_has_role(session_user, $1, 'MEMBER')", stack.read_role)
    return request_id, grant, session


async def request_revoke(
    stack: LapseStack, request_id: str, grant: request_service_pb2.GrantView, *, end_sessions: bool
) -> None:
    """Ask for the grant's end as the request service does for an offboarding: it names the
    grant and why, and the grant-scheduler decides the epoch."""
    now = SystemClock().now()
    requested = events_pb2.GrantEndRequested(
        grant_id=grant.grant_id,
        request_id=request_id,
        reason=common_pb2.REASON_OFFBOARDING,
        actor="end-sessions test",
        end_sessions=end_sessions,
    )
    envelope = build_envelope(
        requested,
        producer="request",
        occurred_at=now,
        request_id=request_id,
        grant_id=grant.grant_id,
    )
    await publish_raw(
        stack.kafka_as("lapse-request"),
        stack.topic_prefix + "lapse.end-requests.v1",
        value=envelope.SerializeToString(deterministic=True),
        key=grant.grant_id.encode(),
        headers=[
            ("lapse-type", envelope.type.encode()),
            ("lapse-event-id", envelope.event_id.encode()),
        ],
    )


async def revoke_detail(stack: LapseStack, grant_id: str) -> str:
    """The detail of the agent's verified revoke result for the grant."""
    revokes = [
        result
        for result in await agent_results(stack, grant_id)
        if result.kind == common_pb2.COMMAND_KIND_REVOKE and result.verified
    ]
    assert len(revokes) == 1, revokes
    return revokes[0].detail


async def test_revoke_asking_to_end_sessions_closes_the_open_connection(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("s01")
    try:
        request_id, grant, session = await active_grant_with_open_session(clients, stack, "s01")
        try:
            # The case that makes ending sessions matter: a session that switched to the
            # role keeps its privileges after the membership is gone.
            await session.execute(f'SET ROLE "{stack.read_role}"')
            started = time.monotonic()
            await request_revoke(stack, request_id, grant, end_sessions=True)
            await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
            to_revoked = time.monotonic() - started
            assert not await has_role(
                stack.infra.target_admin_dsn, login=login, role=stack.read_role
            )
            with pytest.raises(SESSION_ENDED):
                for _ in range(50):  # the backend exits shortly after pg_terminate_backend
                    await session.fetchval("SELECT 1")
                    await asyncio.sleep(0.1)
            to_closed = time.monotonic() - started
        finally:
            session.terminate()
        detail = await revoke_detail(stack, grant.grant_id)
        assert f"ended 1 session(s) of {login}" in detail, detail
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[end-sessions] revoke request -> REVOKED: {to_revoked:.2f}s; "
            f"-> connection seen closed: {to_closed:.2f}s; agent: {detail}"
        )


async def test_revoke_without_end_sessions_leaves_the_connection_without_the_role(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("s02")
    try:
        request_id, grant, session = await active_grant_with_open_session(clients, stack, "s02")
        try:
            started = time.monotonic()
            await request_revoke(stack, request_id, grant, end_sessions=False)
            await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
            to_revoked = time.monotonic() - started
            assert not await has_role(
                stack.infra.target_admin_dsn, login=login, role=stack.read_role
            )
            assert await session.fetchval("SELECT 1") == 1, "the connection stays usable"
            assert not await session.fetchval(
                "SELECT pg_has_role(session_user, $1, 'MEMBER')", stack.read_role
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await session.execute(f'SET ROLE "{stack.read_role}"')
        finally:
            await session.close()
        detail = await revoke_detail(stack, grant.grant_id)
        assert "session(s)" not in detail, detail
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[end-sessions] plain revoke request -> REVOKED: {to_revoked:.2f}s; agent: {detail}"
        )
