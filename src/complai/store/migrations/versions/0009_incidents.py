"""incidents: the personal-data breach register with its 72-hour notification clock

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("evidence_json", sa.Text, nullable=False),
        sa.Column("opened_at", tz, nullable=False),
        sa.Column("notify_by", tz, nullable=False),
        sa.Column("notified_at", tz),
        sa.Column("authority", sa.String(200)),
        sa.Column("closed_at", tz),
        sa.Column("opened_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )


def downgrade() -> None:
    op.drop_table("incidents")
