"""models: trained models with their cards and training subjects; (epsilon, delta) budget spends

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("dp_budgets") as t:
        t.add_column(sa.Column("approx_eps_spent", sa.Float, nullable=False, server_default="0"))
        t.add_column(sa.Column("approx_delta_spent", sa.Float, nullable=False, server_default="0"))
    with op.batch_alter_table("dp_spends") as t:
        t.add_column(sa.Column("delta", sa.Float, nullable=False, server_default="0"))
    op.create_table(
        "models",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("private", sa.Boolean, nullable=False),
        sa.Column("epsilon", sa.Float),
        sa.Column("delta", sa.Float),
        sa.Column("subjects", sa.Integer, nullable=False),
        sa.Column("model_digest", sa.String(80), nullable=False),
        sa.Column("card_digest", sa.String(80), nullable=False),
        sa.Column("card", sa.Text, nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True)),
        sa.Column("flag_reason", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_models_dataset_datasets"),
    )
    op.create_index("ix_models_dataset", "models", ["dataset"])
    op.create_table(
        "model_subjects",
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("model_id", "subject_id", name="pk_model_subjects"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_subjects_model_id_models"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name="fk_model_subjects_subject_id_subjects"),
    )
    op.create_index("ix_model_subjects_subject_id", "model_subjects", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_model_subjects_subject_id", "model_subjects")
    op.drop_table("model_subjects")
    op.drop_index("ix_models_dataset", "models")
    op.drop_table("models")
    with op.batch_alter_table("dp_spends") as t:
        t.drop_column("delta")
    with op.batch_alter_table("dp_budgets") as t:
        t.drop_column("approx_delta_spent")
        t.drop_column("approx_eps_spent")
