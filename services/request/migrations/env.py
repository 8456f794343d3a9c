"""Alembic environment of the request service; see lapse_common.migrations."""

from lapse_common.migrations import run_migrations

run_migrations()
