"""Shared fixtures of lapse_common's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A service's own tables (outbox, inbox) on SQLite, the zero-setup backend."""
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/t.db", schema="probe")
    await create_schema(engine, schema="probe", metadatas=[Base.metadata])
    yield session_factory(engine)
    await engine.dispose()
