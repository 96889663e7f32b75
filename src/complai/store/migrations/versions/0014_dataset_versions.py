"""dataset schema versions: every schema a dataset has had, the version each record was sealed under,
and a tombstone for dropped datasets

A record's associated data binds the digest of its dataset's schema; once a schema can change, a record
must be opened under the digest of the version it was sealed with, so each record carries that version
(`records.schema_version`) and `dataset_versions` keeps every version's canonical schema and digest.
Existing datasets become version 1 and their records schema version 1. A dropped dataset keeps its row
(`datasets.dropped_at`), so its name cannot be re-registered and bring anything back.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("schema_json", sa.Text, nullable=False),
        sa.Column("schema_digest", sa.String(80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "version", name="pk_dataset_versions"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dataset_versions_dataset_datasets"),
    )
    # added in place (no table rebuild: records, budgets and models reference datasets); existing datasets
    # are at version 1, and so are their records
    op.add_column("datasets", sa.Column("version", sa.Integer, nullable=False, server_default="1"))
    op.add_column("datasets", sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("records", sa.Column("schema_version", sa.Integer, nullable=False, server_default="1"))

    datasets = sa.table(
        "datasets",
        sa.column("name", sa.String),
        sa.column("schema_json", sa.Text),
        sa.column("schema_digest", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    versions = sa.table(
        "dataset_versions",
        sa.column("dataset", sa.String),
        sa.column("version", sa.Integer),
        sa.column("schema_json", sa.Text),
        sa.column("schema_digest", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        versions.insert().from_select(
            ["dataset", "version", "schema_json", "schema_digest", "created_at"],
            sa.select(
                datasets.c.name,
                sa.literal(1, sa.Integer),
                datasets.c.schema_json,
                datasets.c.schema_digest,
                datasets.c.created_at,
            ),
        )
    )


def downgrade() -> None:
    op.drop_column("records", "schema_version")
    op.drop_column("datasets", "dropped_at")
    op.drop_column("datasets", "version")
    op.drop_table("dataset_versions")
