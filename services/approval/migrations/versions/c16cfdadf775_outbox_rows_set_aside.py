"""outbox rows set aside

Revision ID: c16cfdadf775
Revises: 2d380294555c
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_outbox_set_aside_columns,
    drop_outbox_set_aside_columns,
)

revision: str = "c16cfdadf775"
down_revision: str | None = "2d380294555c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_set_aside_columns()


def downgrade() -> None:
    drop_outbox_set_aside_columns()
