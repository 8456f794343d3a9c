"""Throwaway roles in the real target PostgreSQL, so agent tests never touch the shared
demo roles (alice, bob, demo_read, demo_write) or each other's."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parents[4]
# What deploy/local/postgres.sh creates: lapse_agent has CREATEROLE in demo_target.
LOCAL_TARGET_DSN = "postgresql://lapse_agent:lapse_agent@127.0.0.1:55432/demo_target"


def target_dsn() -> str:
    """LAPSE_TEST_TARGET_DSN, else the local cluster (started if needed; never stopped
    here, since other test runs may share it)."""
    configured = os.environ.get("LAPSE_TEST_TARGET_DSN")
    if configured:
        return configured
    subprocess.run(
        [str(REPO / "deploy" / "local" / "postgres.sh"), "start"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return LOCAL_TARGET_DSN


def dsn_for_login(dsn: str, login: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{login}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class ScratchRoles:
    prefix: str
    password: str = "scratch-password"

    @property
    def alice(self) -> str:
        return f"{self.prefix}_alice"

    @property
    def bob(self) -> str:
        return f"{self.prefix}_bob"

    @property
    def read(self) -> str:
        return f"{self.prefix}_read"

    @property
    def write(self) -> str:
        return f"{self.prefix}_write"

    @property
    def group_only(self) -> str:
        """A NOLOGIN role: not something access may be granted to."""
        return f"{self.prefix}_group"

    @property
    def missing(self) -> str:
        """Mapped in config but never created in the target."""
        return f"{self.prefix}_missing"

    def all(self) -> list[str]:
        return [self.alice, self.bob, self.read, self.write, self.group_only]


async def create_scratch_roles(dsn: str) -> ScratchRoles:
    roles = ScratchRoles(prefix=f"lapse_agent_t_{uuid.uuid4().hex[:10]}")
    conn = await asyncpg.connect(dsn)
    try:
        for login in (roles.alice, roles.bob):
            await conn.execute(f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{roles.password}'")
        for group in (roles.read, roles.write, roles.group_only):
            await conn.execute(f'CREATE ROLE "{group}" NOLOGIN')
    finally:
        await conn.close()
    return roles


async def drop_scratch_roles(dsn: str, roles: ScratchRoles) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for role in roles.all():
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def direct_members(dsn: str, role: str) -> set[str]:
    """Read pg_auth_members independently of the connector under test."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT u.rolname FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " WHERE r.rolname = $1",
            role,
        )
    finally:
        await conn.close()
    return {row["rolname"] for row in rows}
