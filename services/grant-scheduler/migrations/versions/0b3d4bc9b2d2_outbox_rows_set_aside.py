"""outbox rows set aside

Revision ID: 0b3d4bc9b2d2
Revises: de2f84d9cb56
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_outbox_set_aside_columns,
    drop_outbox_set_aside_columns,
)

revision: str = "0b3d4bc9b2d2"
down_revision: str | None = "de2f84d9cb56"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_set_aside_columns()


def downgrade() -> None:
    drop_outbox_set_aside_columns()
