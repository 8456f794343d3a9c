"""outbox rows set aside

Revision ID: d7f99f434809
Revises: 50b13fb7832e
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_outbox_set_aside_columns,
    drop_outbox_set_aside_columns,
)

revision: str = "d7f99f434809"
down_revision: str | None = "50b13fb7832e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_set_aside_columns()


def downgrade() -> None:
    drop_outbox_set_aside_columns()
