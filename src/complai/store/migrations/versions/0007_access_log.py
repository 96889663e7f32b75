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

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("seq", "subject_id", name="pk_access_log"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_access_log_subject_id_subjects"),
    )
    op.create_index("ix_access_log_subject_id", "access_log", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_access_log_subject_id", "access_log")
    op.drop_table("access_log")
