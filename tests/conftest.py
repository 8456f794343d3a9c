"""Fixtures shared by integration tests: real infrastructure and a running Lapse stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.infrastructure import Infrastructure, provide_infrastructure
from tests.stack import LapseStack


@pytest.fixture(scope="session")
def infra() -> Infrastructure:
    return provide_infrastructure()


async def _prepare_databases(stack: LapseStack) -> None:
    admin = await asyncpg.connect(stack.admin_database_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{stack.database_name}"')
    finally:
        await admin.close()
    target = await asyncpg.connect(stack.infra.target_admin_dsn)
    try:
        for role in (stack.read_role, stack.write_role):
            await target.execute(f'CREATE ROLE "{role}" NOLOGIN')
        for user in ("alice", "bob"):
            await target.execute(f"CREATE ROLE \"{stack.login_for(user)}\" LOGIN PASSWORD 'x'")
    finally:
        await target.close()


async def _drop_databases(stack: LapseStack) -> None:
    target = await asyncpg.connect(stack.infra.target_admin_dsn)
    try:
        for role in (
            stack.login_for("alice"),
            stack.login_for("bob"),
            stack.read_role,
            stack.write_role,
        ):
            await target.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await target.close()
    admin = await asyncpg.connect(stack.admin_database_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{stack.database_name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def stack(infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LapseStack]:
    """Every Lapse service running as its own process, isolated from other runs."""
    lapse = LapseStack(infra=infra, workdir=Path(tmp_path_factory.mktemp("lapse")))
    lapse.prepare()
    asyncio.run(_prepare_databases(lapse))
    try:
        lapse.start_all()
    except Exception:
        lapse.stop_all()
        print("\n".join(lapse.logs()))
        raise
    yield lapse
    lapse.stop_all()
    asyncio.run(_drop_databases(lapse))
