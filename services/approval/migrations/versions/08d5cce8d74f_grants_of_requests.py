"""grants of requests: which request each grant belongs to, so an extension can be checked
against the request it names

Revision ID: 08d5cce8d74f
Revises: c16cfdadf775
Create Date: 2026-12-03 06:08:49.299863
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "08d5cce8d74f"
down_revision: str | None = "c16cfdadf775"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "grants_of_requests",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    with op.batch_alter_table("grants_of_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_grants_of_requests_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("grants_of_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_of_requests_request_id"))
    op.drop_table("grants_of_requests")
