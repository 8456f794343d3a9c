"""Alembic migrations per service, run at start-up.

Each service keeps its revisions in `services/<name>/migrations/versions/`; its `env.py`
calls `run_migrations()` here with the service's tables. On PostgreSQL the engine's
schema_translate_map puts every table (and alembic's own version table) in the service's
schema; on SQLite each service has its own file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from lapse_common.db import Base, is_postgres

# The shared tables (outbox, inbox) register on Base.metadata when their modules load.
from lapse_common.messaging import inbox as _inbox  # noqa: F401
from lapse_common.messaging import outbox as _outbox  # noqa: F401


def _config(
    migrations_dir: Path, connection: Connection, metadatas: Sequence[MetaData], schema: str
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["connection"] = connection
    config.attributes["metadatas"] = [Base.metadata, *metadatas]
    config.attributes["schema"] = schema
    return config


async def upgrade_to_head(
    engine: AsyncEngine, *, schema: str, migrations_dir: Path, metadatas: Sequence[MetaData]
) -> None:
    """Bring the service's schema to the newest revision (idempotent)."""
    async with engine.begin() as connection:
        if is_postgres(engine):
            # Replicas starting together must not migrate at the same time.
            await connection.execute(text("SELECT pg_advisory_xact_lock(7301)"))
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            # ALTER TABLE and friends name tables without a schema and do not go through
            # schema_translate_map; for this transaction they resolve in the service schema.
            await connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        await connection.run_sync(
            lambda sync: command.upgrade(_config(migrations_dir, sync, metadatas, schema), "head")
        )


def run_migrations() -> None:
    """Body of every service's migrations/env.py (online mode only: Lapse always migrates
    through the service's own engine)."""
    connection: Connection = context.config.attributes["connection"]
    postgres = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=context.config.attributes["metadatas"],
        render_as_batch=not postgres,
        compare_type=True,
        # Named explicitly: alembic looks the version table up by inspection, which does not
        # go through the schema_translate_map that places the service's own tables.
        version_table_schema=context.config.attributes["schema"] if postgres else None,
    )
    with context.begin_transaction():
        context.run_migrations()


async def pending_model_changes(
    engine: AsyncEngine, *, metadatas: Sequence[MetaData]
) -> list[object]:
    """Differences between the migrated database and the models (empty when in step)."""

    combined = MetaData()
    for metadata in (Base.metadata, *metadatas):
        for table in metadata.tables.values():
            table.to_metadata(combined)

    def compare(connection: Connection) -> list[object]:
        migration = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(migration, combined))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)
