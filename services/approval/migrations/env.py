"""Alembic environment of the approval service; see lapse_common.migrations."""

from lapse_common.migrations import run_migrations

run_migrations()
