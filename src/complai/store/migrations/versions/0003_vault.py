"""vault: subjects, per-subject data keys, consents, objections, encrypted records

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("pseudonym", sa.String(80), nullable=False),
        sa.Column("external_enc", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restricted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restriction_reason", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subjects"),
        sa.UniqueConstraint("pseudonym", name="uq_subjects_pseudonym"),
    )
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", Id, nullable=False, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("kek_version", sa.Integer, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("encryptions", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "version", name="pk_subject_keys"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_subject_keys_subject_id_subjects"),
    )
    op.create_index("ix_subject_keys_kek_version", "subject_keys", ["kek_version"])
    op.create_table(
        "consents",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("basis", sa.String(64), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notice_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_consents_subject_id_subjects"),
    )
    op.create_index("ix_consents_subject_purpose", "consents", ["subject_id", "purpose"])
    op.create_table(
        "objections",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_objections"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_objections_subject_id_subjects"),
    )
    op.create_index("ix_objections_subject_purpose", "objections", ["subject_id", "purpose"])
    op.create_table(
        "records",
        sa.Column("rid", sa.LargeBinary(16), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("rid", name="pk_records"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_records_dataset_datasets"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_records_subject_id_subjects"),
    )
    op.create_index("ix_records_dataset_subject", "records", ["dataset", "subject_id"])
    op.create_index("ix_records_subject", "records", ["subject_id"])
    op.create_index("ix_records_dataset_expires", "records", ["dataset", "expires_us"])


def downgrade() -> None:
    for ix, table in (
        ("ix_records_dataset_expires", "records"),
        ("ix_records_subject", "records"),
        ("ix_records_dataset_subject", "records"),
    ):
        op.drop_index(ix, table)
    op.drop_table("records")
    op.drop_index("ix_objections_subject_purpose", "objections")
    op.drop_table("objections")
    op.drop_index("ix_consents_subject_purpose", "consents")
    op.drop_table("consents")
    op.drop_index("ix_subject_keys_kek_version", "subject_keys")
    op.drop_table("subject_keys")
    op.drop_table("subjects")
