"""audit event subjects and occurred_at index

Revision ID: 9b2e61c4d7a3
Revises: 63f4a9c95e0d
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from lapse_audit.event_subjects import subjects_named

revision: str = "9b2e61c4d7a3"
down_revision: str | None = "63f4a9c95e0d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows are read in batches so a long log does not have to fit in memory.
BATCH = 1000


def upgrade() -> None:
    subjects = op.create_table(
        "audit_event_subjects",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("audit_events.sequence"),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("sequence", "subject"),
    )
    with op.batch_alter_table("audit_event_subjects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_event_subjects_subject"), ["subject"], unique=False
        )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_occurred_at"), ["occurred_at"], unique=False
        )
    # Events recorded before this revision get their subjects too, from the JSON the
    # chain already covers.
    connection = op.get_bind()
    events = sa.table("audit_events", sa.column("sequence"), sa.column("payload_json"))
    after = 0
    while True:
        rows = connection.execute(
            sa.select(events.c.sequence, events.c.payload_json)
            .where(events.c.sequence > after)
            .order_by(events.c.sequence)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        values = [
            {"sequence": sequence, "subject": subject}
            for sequence, payload_json in rows
            for subject in sorted(subjects_named(payload_json))
        ]
        if values:
            op.bulk_insert(subjects, values)
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_occurred_at"))
    with op.batch_alter_table("audit_event_subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_subjects_subject"))
    op.drop_table("audit_event_subjects")
