"""Migration steps for the outbox and inbox tables every service owns a copy of.

Every service's first revision calls these, so the shared tables are defined once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_messaging_tables() -> None:
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"], unique=False)


def drop_messaging_tables() -> None:
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("inbox")


def add_outbox_set_aside_columns() -> None:
    op.add_column("outbox", sa.Column("set_aside_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("set_aside_reason", sa.Text(), nullable=True))


def drop_outbox_set_aside_columns() -> None:
    op.drop_column("outbox", "set_aside_reason")
    op.drop_column("outbox", "set_aside_at")


def add_inbox_handled_at_index() -> None:
    # Housekeeping deletes inbox ids by age (lapse_common.messaging.housekeeping); without
    # the index each batch would scan the whole table. On PostgreSQL this is a plain CREATE
    # INDEX (migrations run in one transaction, which CONCURRENTLY cannot): it holds off
    # writes to the inbox while it builds, before this process's consumers start.
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], unique=False)


def drop_inbox_handled_at_index() -> None:
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
