"""agent registry

Revision ID: 2c8220d530ca
Revises: fc6602d6ba01
Create Date: 2026-12-02 16:15:15.826994
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2c8220d530ca"
down_revision: str | None = "fc6602d6ba01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrolled_agents",
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("agent_id"),
    )


def downgrade() -> None:
    op.drop_table("enrolled_agents")
