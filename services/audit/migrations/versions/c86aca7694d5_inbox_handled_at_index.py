"""inbox handled_at index

Revision ID: c86aca7694d5
Revises: 9b2e61c4d7a3
Create Date: 2026-12-04 18:35:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_inbox_handled_at_index,
    drop_inbox_handled_at_index,
)

revision: str = "c86aca7694d5"
down_revision: str | None = "9b2e61c4d7a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_inbox_handled_at_index()


def downgrade() -> None:
    drop_inbox_handled_at_index()
