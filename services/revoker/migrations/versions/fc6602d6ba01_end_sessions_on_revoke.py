"""end sessions on revoke

Revision ID: fc6602d6ba01
Revises: 34d8060e27b5
Create Date: 2026-11-29 08:10:30.289933
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fc6602d6ba01"
down_revision: str | None = "34d8060e27b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Autogenerate (run against SQLite) rendered the default as text('0'), which PostgreSQL
    # refuses for a boolean column; sa.false() renders correctly on both.
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("end_sessions", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_column("end_sessions")
