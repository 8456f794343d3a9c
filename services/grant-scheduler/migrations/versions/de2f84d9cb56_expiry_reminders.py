"""expiry reminders

Revision ID: de2f84d9cb56
Revises: 62a9da564516
Create Date: 2026-11-29 08:10:37.694800

Grants already ACTIVE when this runs keep remind_at NULL: they are not reminded of their
current expiry (an extension arms the reminder again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "de2f84d9cb56"
down_revision: str | None = "62a9da564516"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_grants_remind", ["status", "remind_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_remind")
        batch_op.drop_column("remind_at")
