"""inbox handled_at index

Revision ID: fdbbe0ae06c3
Revises: 96cab1ce9b93
Create Date: 2026-12-04 18:35:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_inbox_handled_at_index,
    drop_inbox_handled_at_index,
)

revision: str = "fdbbe0ae06c3"
down_revision: str | None = "96cab1ce9b93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_inbox_handled_at_index()


def downgrade() -> None:
    drop_inbox_handled_at_index()
