"""inbox handled_at index

Revision ID: 59838107f644
Revises: d7f99f434809
Create Date: 2026-12-04 18:35:00
"""

from collections.abc import Sequence

from lapse_common.messaging_tables import (
    add_inbox_handled_at_index,
    drop_inbox_handled_at_index,
)

revision: str = "59838107f644"
down_revision: str | None = "d7f99f434809"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_inbox_handled_at_index()


def downgrade() -> None:
    drop_inbox_handled_at_index()
