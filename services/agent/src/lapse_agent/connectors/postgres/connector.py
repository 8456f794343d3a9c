"""PostgreSQL connector: permission = direct membership of a login in a target role.

GRANT/REVOKE cannot take bind parameters, so role and login names go through
`quote_identifier` (allow-list + quoting); every catalog lookup uses bind parameters.
Membership is read from `pg_auth_members` (direct membership), not `pg_has_role`, which
is true for superusers and for indirect memberships we did not grant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from lapse_agent.config import PostgresIntegrationConfig
from lapse_agent.connectors.base import (
    Access,
    Change,
    Holding,
    PermanentTargetError,
    PrivilegedPrincipals,
    TargetError,
    Verification,
)
from lapse_agent.connectors.postgres.errors import classify
from lapse_agent.connectors.postgres.identifiers import UnsafeIdentifier, quote_identifier

logger = logging.getLogger(__name__)

_LOGIN_EXISTS = "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1"
_ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = $1"
_MEMBERSHIP_GRANTORS = """
SELECT coalesce(grantor.rolname, '?') AS grantor
  FROM pg_auth_members m
  JOIN pg_roles granted ON granted.oid = m.roleid
  JOIN pg_roles member ON member.oid = m.member
  LEFT JOIN pg_roles grantor ON grantor.oid = m.grantor
 WHERE granted.rolname = $1 AND member.rolname = $2
"""
_MEMBERS_OF_ROLES = """
SELECT DISTINCT granted.rolname AS role, member.rolname AS member
  FROM pg_auth_members m
  JOIN pg_roles granted ON granted.oid = m.roleid
  JOIN pg_roles member ON member.oid = m.member
 WHERE granted.rolname = ANY($1::text[])
 ORDER BY 1, 2
"""
# rolsuper is the only flag that bypasses every permission check; current_user and
# session_user differ only if the DSN's login did SET ROLE, and both are the agent's own.
_PRIVILEGED = """
SELECT coalesce(array_agg(rolname) FILTER (WHERE rolsuper), '{}') AS superusers,
       current_user::text AS current_login,
       session_user::text AS session_login
  FROM pg_roles
"""
_TERMINATE_SESSIONS = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS ended
  FROM pg_stat_activity
 WHERE usename = $1 AND pid <> pg_backend_pid()
"""


class PostgresConnector:
    def __init__(self, config: PostgresIntegrationConfig) -> None:
        self._config = config
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @property
    def integration_id(self) -> str:
        return self._config.id

    # -- capabilities -------------------------------------------------------------------

    async def grant(self, access: Access) -> Change:
        role = self._role_for(access)
        login = _quoted(access.principal, what="login")
        async with self._connection(doing=f"granting {role} to {access.principal}") as conn:
            can_login = await conn.fetchval(_LOGIN_EXISTS, access.principal)
            if can_login is None:
                raise PermanentTargetError(f"login {access.principal} does not exist in target")
            if not can_login:
                raise PermanentTargetError(
                    f"{access.principal} exists in target but is not a login (NOLOGIN role)"
                )
            await self._require_role(conn, role, access)
            if await self._grantors(conn, role, access.principal):
                return Change(
                    changed=False, note=f"{access.principal} is already a member of {role}"
                )
            await conn.execute(f"GRANT {_quoted(role, what='role')} TO {login}")
        logger.info("%s: granted %s to %s", self.integration_id, role, access.principal)
        return Change(changed=True, note=f"granted {role} to {access.principal}")

    async def revoke(self, access: Access, *, end_sessions: bool = False) -> Change:
        role = self._role_for(access)
        login = _quoted(access.principal, what="login")
        async with self._connection(doing=f"revoking {role} from {access.principal}") as conn:
            if await conn.fetchval(_LOGIN_EXISTS, access.principal) is None:
                return Change(
                    changed=False,
                    note=f"login {access.principal} does not exist in target; nothing to revoke",
                )
            await self._require_role(conn, role, access)
            changed = bool(await self._grantors(conn, role, access.principal))
            if changed:
                await conn.execute(f"REVOKE {_quoted(role, what='role')} FROM {login}")
            note = (
                f"revoked {role} from {access.principal}"
                if changed
                else f"{access.principal} was not a member of {role}; nothing to revoke"
            )
            if end_sessions or self._config.terminate_sessions_on_revoke:
                # Also when nothing changed: an earlier attempt may have revoked and then
                # failed before ending the sessions.
                ended = await self._end_sessions(conn, access.principal, done=note)
                note += f"; ended {ended} session(s) of {access.principal}"
        logger.info("%s: %s", self.integration_id, note)
        return Change(changed=changed, note=note)

    async def verify(self, access: Access) -> Verification:
        role = self._role_for(access)
        doing = f"reading {role} membership of {access.principal}"
        async with self._connection(doing=doing) as conn:
            grantors = await self._grantors(conn, role, access.principal)
        if not grantors:
            return Verification(holds=False, detail=f"{access.principal} is not a member of {role}")
        # On PostgreSQL 16+ a REVOKE only removes the membership rows the revoking login
        # granted; naming the grantors tells the operator why it is still there.
        return Verification(
            holds=True,
            detail=f"{access.principal} is a member of {role} "
            f"(granted by {', '.join(sorted(set(grantors)))})",
        )

    async def discover(self, *, resource: str = "", permission: str = "") -> list[Holding]:
        accesses_by_role: dict[str, list[tuple[str, str]]] = {}
        for resource_name, resource_config in self._config.resources.items():
            if resource and resource_name != resource:
                continue
            for permission_name, role in resource_config.permissions.items():
                if permission and permission_name != permission:
                    continue
                accesses_by_role.setdefault(role, []).append((resource_name, permission_name))
        if not accesses_by_role:
            raise PermanentTargetError(
                f"integration {self.integration_id} has no resource/permission matching "
                f"{resource or '*'}/{permission or '*'}"
            )
        async with self._connection(doing="listing role members") as conn:
            rows = await conn.fetch(_MEMBERS_OF_ROLES, list(accesses_by_role))
        return [
            Holding(
                access=Access(
                    resource=resource_name, permission=permission_name, principal=row["member"]
                ),
                target_object=row["role"],
            )
            for row in rows
            for resource_name, permission_name in accesses_by_role[row["role"]]
        ]

    async def privileged_principals(self) -> PrivilegedPrincipals:
        async with self._connection(doing="reading superusers and the agent's login") as conn:
            row = await conn.fetchrow(_PRIVILEGED)
        return PrivilegedPrincipals(
            superusers=frozenset(row["superusers"]),
            agent_logins=frozenset({row["current_login"], row["session_login"]}),
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- helpers ------------------------------------------------------------------------

    def _role_for(self, access: Access) -> str:
        resource = self._config.resources.get(access.resource)
        if resource is None:
            known = ", ".join(sorted(self._config.resources))
            raise PermanentTargetError(
                f"resource {access.resource!r} is not configured for integration "
                f"{self.integration_id} (configured: {known})"
            )
        role = resource.permissions.get(access.permission)
        if role is None:
            known = ", ".join(sorted(resource.permissions))
            raise PermanentTargetError(
                f"permission {access.permission!r} is not configured for resource "
                f"{access.resource} of integration {self.integration_id} (configured: {known})"
            )
        return role

    async def _require_role(self, conn: Any, role: str, access: Access) -> None:
        if await conn.fetchval(_ROLE_EXISTS, role) is None:
            raise PermanentTargetError(
                f"role {role} (mapped from {access.resource}/{access.permission}) "
                "does not exist in target"
            )

    async def _end_sessions(self, conn: Any, login: str, *, done: str) -> int:
        try:
            return int(await conn.fetchval(_TERMINATE_SESSIONS, login))
        except asyncpg.InsufficientPrivilegeError as error:
            # Say what already happened and which privilege is missing: the role is gone
            # but the sessions live on, which an operator must know to fix it.
            raise PermanentTargetError(
                f"{self.integration_id}: {done}, but could not end the sessions of {login}: "
                f"{error} (the agent's login needs pg_signal_backend or membership in {login})"
            ) from error

    async def _grantors(self, conn: Any, role: str, login: str) -> list[str]:
        return [row["grantor"] for row in await conn.fetch(_MEMBERSHIP_GRANTORS, role, login)]

    async def _get_pool(self) -> asyncpg.Pool:
        # Created lazily so the agent starts (and heartbeats) while a target is down;
        # commands for it then fail as transient instead of the whole agent failing.
        async with self._pool_lock:
            if self._pool is None:
                statement_timeout_ms = int(self._config.statement_timeout_seconds * 1000)
                self._pool = await asyncpg.create_pool(
                    self._config.target_dsn,
                    min_size=0,
                    max_size=self._config.pool_max_size,
                    timeout=self._config.connect_timeout_seconds,
                    command_timeout=self._config.statement_timeout_seconds,
                    server_settings={
                        "application_name": f"lapse-agent:{self.integration_id}",
                        "statement_timeout": str(statement_timeout_ms),
                        "lock_timeout": str(statement_timeout_ms),
                    },
                )
            return self._pool

    @asynccontextmanager
    async def _connection(self, *, doing: str) -> AsyncIterator[Any]:
        """A pooled connection; failures surface as Transient/PermanentTargetError."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._config.connect_timeout_seconds) as conn:
                yield conn
        except TargetError:
            raise
        except Exception as error:
            raise classify(error, doing=f"{self.integration_id}: {doing}") from error


def _quoted(name: str, *, what: str) -> str:
    try:
        return quote_identifier(name, what=what)
    except UnsafeIdentifier as unsafe:
        raise PermanentTargetError(str(unsafe)) from None
