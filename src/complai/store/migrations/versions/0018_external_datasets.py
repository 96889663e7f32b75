"""external datasets: where a dataset's rows live in the lake and who owns them, the subjects enrolled
in it (by keyed link), and the erasure requests sent to its owner system

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "external_sources",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("owner_key", sa.String(80), nullable=False),
        sa.Column("erasure_days", sa.Integer, nullable=False),
        sa.Column("time_column", sa.String(63)),
        sa.Column("physical_json", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_external_sources_dataset_datasets"),
        sa.PrimaryKeyConstraint("dataset", name="pk_external_sources"),
    )
    op.create_table(
        "external_subjects",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("link", sa.LargeBinary(32), nullable=False),
        sa.Column("enrolled_at", tz, nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_external_subjects_dataset_datasets"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_external_subjects_subject_id_subjects"),
        sa.PrimaryKeyConstraint("dataset", "subject_id", name="pk_external_subjects"),
        sa.UniqueConstraint("dataset", "link", name="uq_external_subjects_dataset_link"),
    )
    op.create_index("ix_external_subjects_subject_id", "external_subjects", ["subject_id"])
    op.create_table(
        "external_erasures",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("link", sa.LargeBinary(32), nullable=False),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("erase_seq", sa.BigInteger, nullable=False),
        sa.Column("requested_at", tz, nullable=False),
        sa.Column("due_at", tz, nullable=False),
        sa.Column("request_sealed", sa.LargeBinary),
        sa.Column("exported_at", tz),
        sa.Column("checked_at", tz),
        sa.Column("check_seq", sa.BigInteger),
        sa.Column("state", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_external_erasures_dataset_datasets"),
        sa.PrimaryKeyConstraint("id", name="pk_external_erasures"),
    )
    op.create_index("ix_external_erasures_dataset", "external_erasures", ["dataset"])


def downgrade() -> None:
    op.drop_table("external_erasures")
    op.drop_index("ix_external_subjects_subject_id", table_name="external_subjects")
    op.drop_table("external_subjects")
    op.drop_table("external_sources")
