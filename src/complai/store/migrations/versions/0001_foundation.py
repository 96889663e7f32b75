"""foundation: workspace metadata and the dataset catalogue

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("schema_json", sa.Text, nullable=False),
        sa.Column("schema_digest", sa.String(80), nullable=False),
        sa.Column("purposes_json", sa.Text, nullable=False),
        sa.Column("retention", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_datasets"),
    )


def downgrade() -> None:
    op.drop_table("datasets")
    op.drop_table("meta")
