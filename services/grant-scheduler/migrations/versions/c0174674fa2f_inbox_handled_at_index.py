"""inbox handled_at index

Revision ID: c0174674fa2f
Revises: 0b3d4bc9b2d2
Create Date: 2026-12-04 18:35:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_inbox_handled_at_index,
    drop_inbox_handled_at_index,
)

revision: str = "c0174674fa2f"
down_revision: str | None = "0b3d4bc9b2d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_inbox_handled_at_index()


def downgrade() -> None:
    drop_inbox_handled_at_index()
