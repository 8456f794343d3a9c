"""inbox handled_at index

Revision ID: 92e4bbe0f43f
Revises: 08d5cce8d74f
Create Date: 2026-12-04 18:35:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_inbox_handled_at_index,
    drop_inbox_handled_at_index,
)

revision: str = "92e4bbe0f43f"
down_revision: str | None = "08d5cce8d74f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_inbox_handled_at_index()


def downgrade() -> None:
    drop_inbox_handled_at_index()
