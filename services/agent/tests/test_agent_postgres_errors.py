"""Which target failures are retryable. Needs no database: asyncpg's exception classes
carry their SQLSTATE, and an unreachable target is just a closed port."""

import socket

import asyncpg
import pytest
from lapse_agent.config import parse_config
from lapse_agent.connectors.base import (
    Access,
    PermanentTargetError,
    TransientTargetError,
)
from lapse_agent.connectors.postgres.connector import PostgresConnector
from lapse_agent.connectors.postgres.errors import classify


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UndefinedObjectError('role "nope" does not exist'),
        asyncpg.InsufficientPrivilegeError("permission denied to grant role"),
        asyncpg.InvalidGrantOperationError("grant options cannot be granted back"),
    ],
)
def test_request_errors_are_permanent(error: Exception) -> None:
    classified = classify(error, doing="granting demo_read to alice")
    assert isinstance(classified, PermanentTargetError)
    assert classified.detail.startswith("granting demo_read to alice: ")
    assert error.sqlstate in classified.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InvalidPasswordError('password authentication failed for user "lapse_agent"'),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        RuntimeError("something nobody expected"),
    ],
)
def test_moment_errors_are_transient(error: Exception) -> None:
    assert isinstance(classify(error, doing="x"), TransientTargetError)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_target_is_transient_and_the_connector_recovers_later() -> None:
    config = parse_config(
        {
            "integrations": [
                {
                    "id": "down-pg",
                    "kind": "postgres",
                    "dsn": f"postgresql://lapse_agent:x@127.0.0.1:{_closed_port()}/demo_target",
                    "connect_timeout_seconds": 2,
                    "resources": {"appdb": {"permissions": {"read": "demo_read"}}},
                }
            ]
        },
        source="test",
    )
    connector = PostgresConnector(config.integrations[0])
    try:
        with pytest.raises(TransientTargetError, match="down-pg: granting demo_read to alice"):
            await connector.grant(Access(resource="appdb", permission="read", principal="alice"))
    finally:
        await connector.close()


async def test_unmapped_names_and_unsafe_logins_fail_before_connecting() -> None:
    config = parse_config(
        {
            "integrations": [
                {
                    "id": "pg",
                    "kind": "postgres",
                    "dsn": f"postgresql://lapse_agent:x@127.0.0.1:{_closed_port()}/demo_target",
                    "resources": {"appdb": {"permissions": {"read": "demo_read"}}},
                }
            ]
        },
        source="test",
    )
    connector = PostgresConnector(config.integrations[0])
    with pytest.raises(PermanentTargetError, match="resource 'billing' is not configured"):
        await connector.grant(Access(resource="billing", permission="read", principal="alice"))
    with pytest.raises(PermanentTargetError, match="permission 'admin' is not configured"):
        await connector.revoke(Access(resource="appdb", permission="admin", principal="alice"))
    with pytest.raises(PermanentTargetError, match="not an allowed PostgreSQL name"):
        await connector.grant(
            Access(resource="appdb", permission="read", principal='x"; DROP ROLE y; --')
        )
