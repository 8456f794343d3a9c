"""Fixtures for the CLI tests: a fresh SQLite database for the audit server they talk to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lapse_audit.models import AuditBase
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/audit.db", schema="audit")
    await create_schema(engine, schema="audit", metadatas=[Base.metadata, AuditBase.metadata])
    yield session_factory(engine)
    await engine.dispose()
