"""access log: the subjects each governed read reached, for consent-at-the-time audits

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("subject_ids", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_access_log"),
    )


def downgrade() -> None:
    op.drop_table("access_log")
