"""subject requests: the register of data subject requests with their deadlines and per-step status

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "subject_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("jurisdiction", sa.String(32), nullable=False),
        sa.Column("opened_at", tz, nullable=False),
        sa.Column("due_at", tz, nullable=False),
        sa.Column("ack_due_at", tz),
        sa.Column("acknowledged_at", tz),
        sa.Column("extended_at", tz),
        sa.Column("verified_at", tz),
        sa.Column("verification", sa.String(64)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("steps_json", sa.Text, nullable=False),
        sa.Column("closed_at", tz),
        sa.Column("opened_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subject_requests"),
    )
    op.create_index("ix_subject_requests_subject", "subject_requests", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_subject_requests_subject", "subject_requests")
    op.drop_table("subject_requests")
