"""`python -m lapse_common.new_migration SERVICE "message"` (or `make migration`): write a
new Alembic revision for one service by comparing its models with its migrations.

It migrates a throwaway SQLite database to the newest revision, then autogenerates what the
models add. Review the file before committing it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from lapse_common.db import create_engine_for_service
from lapse_common.migrations import _config, upgrade_to_head

REPO = Path(__file__).resolve().parents[4]


def service_metadata(service: str) -> MetaData:
    """The metadata of the DeclarativeBase the service's models module defines."""
    module = importlib.import_module(f"lapse_{service.replace('-', '_')}.models")
    bases = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, DeclarativeBase)
        and value.__module__ == module.__name__
        and DeclarativeBase in value.__bases__
    ]
    if len(bases) != 1:
        raise SystemExit(f"{module.__name__} must define exactly one DeclarativeBase subclass")
    return bases[0].metadata


async def write_revision(service: str, message: str) -> None:
    migrations_dir = REPO / "services" / service / "migrations"
    metadata = service_metadata(service)
    schema = service.replace("-", "_")
    with tempfile.TemporaryDirectory() as workdir:
        engine = create_engine_for_service(f"sqlite+aiosqlite:///{workdir}/probe.db", schema=schema)
        await upgrade_to_head(
            engine, schema=schema, migrations_dir=migrations_dir, metadatas=[metadata]
        )
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync: command.revision(
                    _config(migrations_dir, sync, [metadata], schema),
                    message=message,
                    autogenerate=True,
                )
            )
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", help="e.g. request, grant-scheduler")
    parser.add_argument("message", help="what the revision changes")
    options = parser.parse_args()
    asyncio.run(write_revision(options.service, options.message))


if __name__ == "__main__":
    main()
