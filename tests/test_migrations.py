"""Every service's Alembic revisions build exactly the tables its models declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from lapse_common.db import create_engine_for_service
from lapse_common.migrations import pending_model_changes, upgrade_to_head
from lapse_common.new_migration import service_metadata

REPO = Path(__file__).resolve().parent.parent
SERVICES = ["request", "approval", "grant-scheduler", "revoker", "audit"]


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_models(service: str, tmp_path: Path) -> None:
    schema = service.replace("-", "_")
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/m.db", schema=schema)
    metadata = service_metadata(service)
    migrations = REPO / "services" / service / "migrations"
    try:
        await upgrade_to_head(
            engine, schema=schema, migrations_dir=migrations, metadatas=[metadata]
        )
        # A second start finds nothing to do.
        await upgrade_to_head(
            engine, schema=schema, migrations_dir=migrations, metadatas=[metadata]
        )
        differences = await pending_model_changes(engine, metadatas=[metadata])
    finally:
        await engine.dispose()
    assert differences == [], (
        f"{service}: models and migrations differ; run "
        f"`make migration SERVICE={service} MESSAGE=...`: {differences}"
    )
