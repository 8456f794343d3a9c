"""outbox rows set aside

Revision ID: 63f4a9c95e0d
Revises: 6dfd1b84e077
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_outbox_set_aside_columns,
    drop_outbox_set_aside_columns,
)

revision: str = "63f4a9c95e0d"
down_revision: str | None = "6dfd1b84e077"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_set_aside_columns()


def downgrade() -> None:
    drop_outbox_set_aside_columns()
