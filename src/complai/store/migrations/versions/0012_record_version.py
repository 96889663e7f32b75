"""record version: a counter each rectification increments, bound (with the record's times) into the
record's AEAD associated data

Records written before this revision are sealed under the older associated data; the migration marks
them (version NULL, meta `records_reseal` = pending) and the workspace re-seals them under the new
associated data, with their keys, in the same transaction that upgrades the schema (Workspace.open).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as t:
        t.add_column(sa.Column("version", sa.Integer, nullable=True))
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.insert().values(key="records_reseal", value="pending"))


def downgrade() -> None:
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.delete().where(meta.c.key == "records_reseal"))
    with op.batch_alter_table("records") as t:
        t.drop_column("version")
