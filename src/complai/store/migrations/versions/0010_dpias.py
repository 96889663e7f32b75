"""dpias: data protection impact assessments per dataset, versioned, with their sign-off

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "dpias",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("schema_digest", sa.String(80), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("signed_by", sa.String(200)),
        sa.Column("signed_at", tz),
        sa.PrimaryKeyConstraint("dataset", "version", name="pk_dpias"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dpias_dataset_datasets"),
    )


def downgrade() -> None:
    op.drop_table("dpias")
