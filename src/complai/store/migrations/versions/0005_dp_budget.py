"""dp budget: per-dataset (and per-principal) privacy budgets (pure epsilon and zCDP rho spent), spends

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dp_budgets",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("rho_total", sa.Float, nullable=False),
        sa.Column("rho_spent", sa.Float, nullable=False),
        sa.Column("eps_spent", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "principal", name="pk_dp_budgets"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dp_budgets_dataset_datasets"),
    )
    op.create_table(
        "dp_spends",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("rho", sa.Float, nullable=False),
        sa.Column("eps", sa.Float, nullable=False),
        sa.Column("mechanism", sa.String(64), nullable=False),
        sa.Column("what", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dp_spends"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dp_spends_dataset_datasets"),
    )
    op.create_index("ix_dp_spends_dataset", "dp_spends", ["dataset"])


def downgrade() -> None:
    op.drop_index("ix_dp_spends_dataset", "dp_spends")
    op.drop_table("dp_spends")
    op.drop_table("dp_budgets")
