"""outbox rows set aside

Revision ID: 96cab1ce9b93
Revises: 2c8220d530ca
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_outbox_set_aside_columns,
    drop_outbox_set_aside_columns,
)

revision: str = "96cab1ce9b93"
down_revision: str | None = "2c8220d530ca"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_set_aside_columns()


def downgrade() -> None:
    drop_outbox_set_aside_columns()
